"""Django + PocketPing in one file.

ASGI (WebSocket, SSE, polling):  uvicorn examples.django_app:application
WSGI (SSE, polling):             gunicorn -k gthread --threads 32 examples.django_app:wsgi_application
"""

import os

import django
from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

settings.configure(
    DEBUG=False,
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret"),
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
)
django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

from pocketping import PocketPing, SQLiteStorage  # noqa: E402

inbox: list[str] = []
pp = PocketPing(
    welcome_message="Hi! How can we help?",
    on_message=lambda session, message: inbox.append(message.content),
    storage=SQLiteStorage(os.environ.get("POCKETPING_DB", "pocketping.db")),
)


@csrf_exempt
def reply(request, session_id):
    message = pp.sync.send_message(session_id, content=request.GET["text"], type="operator")
    return JsonResponse({"id": message.id})


def show_inbox(request):
    return JsonResponse(inbox, safe=False)


def home(request):
    return HttpResponse('<script src="/pocketping/widget.js" data-endpoint="/pocketping"></script>')


urlpatterns = [path("", home), path("reply/<str:session_id>", reply), path("inbox", show_inbox)]

application = pp.wrap(get_asgi_application())  # asgi.py
wsgi_application = pp.wrap_wsgi(get_wsgi_application())  # wsgi.py
