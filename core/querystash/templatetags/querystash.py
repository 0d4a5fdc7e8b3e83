"""``{% load querystash %}``: ``{% memoize "name" arg ... %}…{% endmemoize %}``.

The fragment is memoized like a ``querystash.memoize`` function: its
rendering runs with a capture active, so the querysets it evaluates (lazy
ones from the context included) decide when it is rendered again. The key is
the name, the arguments (like ``{% cache %}``'s vary-on values, but encoded
exactly) and the fragment's own template text. ``timeout=N`` (seconds) is
optional; the default is ``QUERYSTASH["TIMEOUT"]``.

The fragment must depend only on its arguments and on the queries it runs:
every context variable it shows that is not such a query must be an argument.
"""

from __future__ import annotations

from hashlib import blake2b

from django import template
from django.utils.safestring import mark_safe

from .. import _memoize

register = template.Library()


@register.tag("memoize")
def do_memoize(parser, token):
    bits = token.split_contents()
    if len(bits) < 2:
        raise template.TemplateSyntaxError(
            f"{bits[0]!r} needs a fragment name: {{% memoize \"name\" arg ... %}}")
    name = parser.compile_filter(bits[1])
    vary, timeout = [], None
    for bit in bits[2:]:
        if bit.startswith("timeout="):
            timeout = parser.compile_filter(bit[len("timeout="):])
        else:
            vary.append(parser.compile_filter(bit))
    remaining = len(parser.tokens)  # the parser pops tokens off the end
    before = list(parser.tokens)
    nodelist = parser.parse(("endmemoize",))
    fragment = before[len(parser.tokens):remaining][::-1]
    parser.delete_first_token()
    return MemoizeNode(nodelist, name, vary, timeout, _fingerprint(fragment))


def _fingerprint(tokens) -> str:
    """The fragment's template text: editing the template changes the key."""
    digest = blake2b(digest_size=12)
    for tok in tokens:
        digest.update(f"{tok.token_type.value}:{len(tok.contents)}:{tok.contents}".encode())
    return digest.hexdigest()


class MemoizeNode(template.Node):
    def __init__(self, nodelist, name, vary, timeout, fingerprint: str):
        self.nodelist = nodelist
        self.name = name
        self.vary = vary
        self.timeout = timeout
        self.fingerprint = fingerprint

    def render(self, context):
        name = self.name.resolve(context)
        if not isinstance(name, str) or not name:
            raise template.TemplateSyntaxError(f"memoize: the fragment name {name!r} "
                                               "is not a non-empty string")
        timeout = None
        if self.timeout is not None:
            value = self.timeout.resolve(context)
            try:
                timeout = int(value)
            except (TypeError, ValueError) as exc:
                raise template.TemplateSyntaxError(
                    f"memoize: timeout {value!r} is not a number of seconds") from exc
            if timeout <= 0:
                raise template.TemplateSyntaxError(f"memoize: timeout {timeout} is not positive")
        vary = tuple(v.resolve(context) for v in self.vary)
        html = _memoize.call(f"template:{name}", (self.fingerprint, vary),
                             self.nodelist.render, (context,), {}, timeout)
        return mark_safe(html)
