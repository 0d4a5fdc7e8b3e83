from django.apps import apps as django_apps
from django.core.management.base import BaseCommand, CommandError

from querystash import _memoize, _runtime, _sitestats, api, plugins
from querystash._stats import FIELDS


class Command(BaseCommand):
    help = "Inspect and control querystash: plugins, stats, invalidate."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(
            dest="action", required=True, metavar="{plugins,stats,invalidate}"
        )
        sub.add_parser("plugins", help="List plugins: name, version, hooks, enabled.")
        stats = sub.add_parser("stats", help="Store figures and the site-wide counters "
                               "(this process's where the store keeps none).")
        stats.add_argument("--reset", action="store_true",
                           help="Zero the site-wide counters in the store.")
        inv = sub.add_parser("invalidate", help="Invalidate cached queries of models, or all.")
        inv.add_argument("models", nargs="*", metavar="app_label[.Model]",
                         help="a model, or an app label for all its models")
        inv.add_argument("--all", action="store_true", help="Invalidate every cached entry.")

    def handle(self, *args, action, **options):
        rt = _runtime.current
        if rt is None:
            raise CommandError("querystash is not installed in INSTALLED_APPS.")
        getattr(self, f"handle_{action}")(rt, **options)

    def handle_plugins(self, rt, **options):
        disabled = plugins.disabled_names(rt.config)
        rows = [("name", "version", "enabled", "hooks")]
        for name, plugin in sorted(plugins.pm.list_name_plugin()):
            hooks = sorted(h.name for h in plugins.pm.get_hookcallers(plugin) or ())
            version = plugins.versions.get(name, "built-in" if name.startswith("default_") else "")
            rows.append((name, version, "no" if name in disabled else "yes", ", ".join(hooks)))
        for error in plugins.load_errors:
            rows.append((error.name, "", "FAILED", str(error.error)))
        self._table(rows)

    def handle_stats(self, rt, reset=False, **options):
        if reset:
            self._reset_site(rt)
            return
        self.stdout.write(f"storage: {rt.storage.name if rt.storage else '(none)'}"
                          f"   caching: {'on' if rt.enabled else 'OFF'}")
        for problem in rt.problems:
            self.stdout.write(self.style.ERROR(f"  problem: {problem}"))
        if rt.storage is not None:
            try:
                for key, value in rt.storage.stats().items():
                    self.stdout.write(f"  {key}: {value}")
            except Exception as exc:
                self.stdout.write(self.style.ERROR(f"  store unreachable: {exc!r}"))
        self.stdout.write("")
        why = self._site(rt)
        if why is None:
            return
        self.stdout.write(self.style.WARNING(
            f"ONLY THIS PROCESS'S FIGURES: no site-wide figures, {why}."))
        counters = rt.stats.as_dict()
        memoized = _memoize.stats()
        if not counters and not memoized:
            self.stdout.write("no queries counted in this process yet "
                              "(counters are per process: see querystash.stats())")
            return
        if memoized:
            self._memoized(memoized)
        if counters:
            self._model_table(counters)

    def _site(self, rt) -> str | None:
        """Print the site-wide figures; else return why there are none."""
        why = _sitestats.unavailable(rt)
        if why is not None:
            return why
        every = _sitestats.interval(rt)
        try:
            site = _sitestats.read(rt, _model_labels())
        except Exception as exc:  # noqa: BLE001 - said, then this process's own
            return f"the store could not be read ({exc!r})"
        if not site.flushes and not site.counts:
            off = "STATS_FLUSH_SECONDS is 0 here: is it 0 on the site too?" if every <= 0 else \
                f"processes flush every {every:g}s"
            return f"nothing flushed to the store yet ({off})"
        self.stdout.write(f"site-wide: the counters of every process, added to the store "
                          f"every {every:g}s ({site.flushes} flushes since the last reset; "
                          "`manage.py querystash stats --reset` zeroes them)")
        if every <= 0:
            self.stdout.write(self.style.WARNING(
                "  STATS_FLUSH_SECONDS is 0 here: processes with the same setting no "
                "longer add to these figures"))
        memoized = site.counts.get("memo", {})
        if memoized:
            self._memoized(memoized)
        self._model_table(site.counts.get("model", {}))
        return None

    def _reset_site(self, rt):
        why = _sitestats.unavailable(rt)
        if why is not None:
            raise CommandError(f"No site-wide counters to reset: {why}.")
        try:
            _sitestats.reset(rt, _model_labels())
        except Exception as exc:
            raise CommandError(f"The store could not be reached: {exc!r}") from exc
        self.stdout.write("Site-wide counters zeroed (counts processes took before "
                          "and flush after still come in).")

    def _model_table(self, counters):
        """One row per model: the counters and the hit ratio; the store's row last."""
        rows = [("model", *FIELDS, "hit%")]
        for model, c in sorted(counters.items(), key=lambda item: (not item[0], item[0])):
            rows.append((model or "(store)", *(str(c.get(f, 0)) for f in FIELDS), _ratio(c)))
        if len(rows) > 1:
            self._table(rows)

    def _memoized(self, memoized):
        """One row per memoized function or fragment, then why fills were vetoed."""
        rows = [("memoized", *_memoize.FIELDS, "hit%")]
        rows += [(label, *(str(c.get(f, 0)) for f in _memoize.FIELDS), _ratio(c))
                 for label, c in sorted(memoized.items())]
        self._table(rows)
        for label, c in sorted(memoized.items()):
            for field, n in sorted(c.items()):
                if field.startswith(_memoize.VETO):
                    self.stdout.write(f"  {label}: {field[len(_memoize.VETO):]} ({n})")
        self.stdout.write("")

    def handle_invalidate(self, rt, models, all, **options):
        if all == bool(models):
            raise CommandError("Give app.Model labels, or --all (not both).")
        if rt.storage is None:
            raise CommandError("No storage is configured; nothing to invalidate.")
        if all:
            api.invalidate_all()
            self.stdout.write("Invalidated every cached entry.")
            return
        classes = [model for label in models for model in self._models(label)]
        api.invalidate_models(*classes)
        self.stdout.write(f"Invalidated cached queries of {', '.join(models)}.")

    def _models(self, label: str) -> list:
        """``app_label.Model`` -> [that model]; ``app_label`` -> every model of the app."""
        try:
            if "." in label:
                return [django_apps.get_model(label)]
            return list(django_apps.get_app_config(label).get_models(include_auto_created=True))
        except (LookupError, ValueError) as exc:
            apps = ", ".join(sorted(django_apps.app_configs))
            raise CommandError(
                f"Unknown model or app label {label!r} ({exc}). Give app_label.Model "
                f"(e.g. auth.User) or an app label to invalidate all its models: {apps}."
            ) from exc

    def _table(self, rows):
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            cells = (str(c).ljust(w) for c, w in zip(row, widths, strict=True))
            self.stdout.write("  ".join(cells).rstrip())


def _ratio(counts) -> str:
    """The hit ratio, hits / (hits + misses) in percent; "-" before any."""
    hits, misses = counts.get("hits", 0), counts.get("misses", 0)
    return f"{100 * hits / (hits + misses):.1f}" if hits + misses else "-"


def _model_labels() -> list[str]:
    """Every installed model's label: their site-wide counters are read
    whether or not the registry lists them."""
    return [m._meta.label for m in django_apps.get_models(include_auto_created=True)]
