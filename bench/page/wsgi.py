"""The WSGI application gunicorn serves: ``gunicorn bench.page.wsgi:application``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.page.settings")
application = get_wsgi_application()
