"""Log-in with a limit on password guessing: failed attempts are counted per address and per
username in the shared cache; past the limit the form answers 429 until the window passes.
A successful log-in clears the username's count."""
from __future__ import annotations

import hashlib
import time

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.core.cache import cache
from django.utils.translation import gettext as _

WINDOW_SECONDS = 15 * 60


def _keys(request) -> list[str]:
    username = (request.POST.get("username") or "").strip().lower()
    ip = request.META.get("REMOTE_ADDR", "")
    window = int(time.time() // WINDOW_SECONDS)
    digest = hashlib.sha256(username.encode()).hexdigest()[:32]  # no user names in cache keys
    return [f"vsm-login:ip:{ip}:{window}", f"vsm-login:user:{digest}:{window}"]


def _count(key: str) -> int:
    return int(cache.get(key) or 0)


def _fail(key: str) -> None:
    cache.add(key, 0, timeout=WINDOW_SECONDS + 60)
    try:
        cache.incr(key)
    except ValueError:
        cache.set(key, 1, timeout=WINDOW_SECONDS + 60)


class LoginView(auth_views.LoginView):
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        limit = settings.VSM_LOGIN_FAILURES
        if any(_count(k) >= limit for k in _keys(request)):
            form = self.get_form()
            form.is_bound = True
            form._errors, form.cleaned_data = {}, {}  # shown without checking the password again
            form.add_error(None, _("Too many failed log-ins. Try again in %(minutes)s minutes.")
                           % {"minutes": WINDOW_SECONDS // 60})
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        for key in _keys(self.request):
            _fail(key)
        return super().form_invalid(form)

    def form_valid(self, form):
        cache.delete(_keys(self.request)[1])
        return super().form_valid(form)
