from django.contrib.auth import authenticate
from django.core.management import call_command

from domains.models import Domain, Membership, Role


def test_bootstrap_creates_admin_and_demo_domain_once(db, capsys, settings, tmp_path):
    settings.VSM_DATA_DIR = tmp_path
    call_command("bootstrap")
    out = capsys.readouterr().out
    password = out.split("Log in as:   admin / ")[1].strip()
    user = authenticate(username="admin", password=password)
    assert user is not None and user.is_superuser
    assert Membership.objects.get(domain__slug="demo", user=user).role == Role.OWNER

    call_command("bootstrap")  # a second run changes nothing and prints the same login
    again = capsys.readouterr().out
    assert f"admin / {password}" in again and "(exists)" in again
    assert Domain.objects.count() == 1 and Membership.objects.count() == 1
    assert oct((tmp_path / "initial_admin_password").stat().st_mode)[-3:] == "600"


def test_bootstrap_reset_password(db, capsys, settings, tmp_path):
    settings.VSM_DATA_DIR = tmp_path
    call_command("bootstrap")
    first = capsys.readouterr().out.split("admin / ")[1].strip()
    call_command("bootstrap", "--reset-password")
    second = capsys.readouterr().out.split("admin / ")[1].strip()
    assert first != second
    assert authenticate(username="admin", password=first) is None
    assert authenticate(username="admin", password=second) is not None
