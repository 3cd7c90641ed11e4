"""API authentication by domain-scoped key: ``Authorization: Bearer vsm_…`` or ``Api-Key vsm_…``."""
from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions
from rest_framework.throttling import SimpleRateThrottle

from domains.models import ApiKey


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keywords = ("bearer", "api-key")

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1").split()
        if len(header) != 2 or header[0].lower() not in self.keywords or not header[1].startswith(ApiKey.PREFIX):
            return None  # not ours: let token/session authentication try
        key = ApiKey.lookup(header[1])
        if key is None:
            raise exceptions.AuthenticationFailed(_("Invalid or revoked API key."))
        key.touch()
        return AnonymousUser(), key

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


class IsUserOrApiKey(permissions.BasePermission):
    """A logged-in user or a valid domain API key; the access gate decides the rest."""

    def has_permission(self, request, view):
        return bool(isinstance(request.auth, ApiKey) or (request.user and request.user.is_authenticated))


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "domains.api_auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A domain API key: `Bearer vsm_…`"}


class ApiRateThrottle(SimpleRateThrottle):
    """Every API request counts against its caller (an API key, a user, else the address):
    ``VSM_API_RATE`` (default 600/minute), in the shared cache. The serving endpoints have their
    own, per-domain limit."""

    scope = "api"

    def get_rate(self):
        return settings.VSM_API_RATE

    def get_cache_key(self, request, view):
        auth = getattr(request, "auth", None)
        if isinstance(auth, ApiKey):
            ident = f"key:{auth.prefix}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}
