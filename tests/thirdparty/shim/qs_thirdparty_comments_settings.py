"""django-contrib-comments' test settings: those its tests/runtests.py passes to
settings.configure() (which can't be imported without configuring), as a module."""

import django.contrib.auth.hashers as _hashers

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.messages",
    "django.contrib.sessions",
    "django.contrib.sites",
    "django.contrib.admin",
    "django_comments",
    "testapp",
    "custom_comments",
]
MIDDLEWARE = (
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
)
ROOT_URLCONF = "testapp.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    },
]
SECRET_KEY = "it's a secret to everyone"
SITE_ID = 1

# The suite's CommentTestCase sets PASSWORD_HASHERS to UnsaltedMD5PasswordHasher, which
# Django 5.1 removed; its fixture users' passwords are such hashes. Put the (tiny) hasher
# back so the suite runs on Django 5.2 and 6.1 (it's their test setup, not querystash's).
if not hasattr(_hashers, "UnsaltedMD5PasswordHasher"):
    import hashlib

    from django.utils.crypto import constant_time_compare

    class UnsaltedMD5PasswordHasher(_hashers.BasePasswordHasher):
        algorithm = "unsalted_md5"

        def salt(self):
            return ""

        def encode(self, password, salt):
            return hashlib.md5(password.encode()).hexdigest()

        def decode(self, encoded):
            return {"algorithm": self.algorithm, "hash": encoded, "salt": None}

        def verify(self, password, encoded):
            if len(encoded) == 37 and encoded.startswith("md5$$"):
                encoded = encoded[5:]
            return constant_time_compare(encoded, self.encode(password, ""))

        def safe_summary(self, encoded):
            return {"algorithm": self.algorithm, "hash": encoded}

        def harden_runtime(self, password, encoded):
            pass

    _hashers.UnsaltedMD5PasswordHasher = UnsaltedMD5PasswordHasher
