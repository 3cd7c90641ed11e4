"""Create the first admin user and a demo domain, and print how to log in (idempotent)."""
from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from domains.models import Domain, Membership, Role

DEMO_SLUG = "demo"


class Command(BaseCommand):
    help = "Create an admin user and a demo domain if they do not exist, then print the login."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--email", default="admin@localhost")
        parser.add_argument("--reset-password", action="store_true", help="give the admin user a new password")

    @transaction.atomic
    def handle(self, *args, username, email, reset_password, **options):
        users = get_user_model()
        password_file = settings.VSM_DATA_DIR / "initial_admin_password"
        user = users.objects.filter(username=username).first()
        if user is None or reset_password:
            password = secrets.token_urlsafe(12)
            if user is None:
                user = users.objects.create_superuser(username, email, password)
            else:
                user.set_password(password)
                user.save(update_fields=["password"])
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
        elif password_file.exists():
            password = password_file.read_text().strip()
        else:
            password = "(unchanged; run `manage.py bootstrap --reset-password` for a new one)"

        domain, created = Domain.objects.get_or_create(
            slug=DEMO_SLUG,
            defaults={
                "name": "Demo domain",
                "description": "A domain to try VSM with: upload documents, review QA pairs, train and chat.",
                "language": Domain.Language.ZH,
            },
        )
        Membership.objects.get_or_create(domain=domain, user=user, defaults={"role": Role.OWNER})
        self.stdout.write(
            f"Demo domain: /d/{domain.slug}/ ({'created' if created else 'exists'})\n"
            f"Log in as:   {username} / {password}"
        )
