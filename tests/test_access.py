"""The access gate: members get their role, outsiders a 404, too-low roles a 403."""
import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404

from domains import access
from domains.models import ApiKey, Domain, Role


@pytest.mark.parametrize("who,role", [("owner", Role.OWNER), ("expert", Role.EXPERT), ("viewer", Role.VIEWER)])
def test_members_get_their_role(users, domain, who, role):
    assert access.resolve(users[who], "finance").role == role


def test_strangers_and_anonymous_get_404(users, domain, other_domain):
    from django.contrib.auth.models import AnonymousUser

    for user in (users["stranger"], AnonymousUser(), None):
        with pytest.raises(Http404):
            access.resolve(user, "finance")
    with pytest.raises(Http404):
        access.resolve(users["owner"], "pigs")
    with pytest.raises(Http404):
        access.resolve(users["owner"], "no-such-domain")


def test_too_low_a_role_is_403(users, domain):
    with pytest.raises(PermissionDenied):
        access.resolve(users["viewer"], "finance", min_role=Role.EXPERT)
    with pytest.raises(PermissionDenied):
        access.resolve(users["expert"], "finance", min_role=Role.OWNER)
    assert access.resolve(users["owner"], "finance", min_role=Role.OWNER).is_owner


def test_api_keys_act_within_their_domain_only(domain, other_domain, alice):
    read, _ = ApiKey.issue(domain=domain, name="dashboard", scope="read")
    write, _ = ApiKey.issue(domain=domain, name="crm", scope="read_write")
    assert access.resolve(None, "finance", api_key=read).role == Role.VIEWER
    assert access.resolve(None, "finance", api_key=write, min_role=Role.EXPERT).can_write
    with pytest.raises(PermissionDenied):
        access.resolve(None, "finance", api_key=read, min_role=Role.EXPERT)
    with pytest.raises(PermissionDenied):
        access.resolve(None, "finance", api_key=write, min_role=Role.OWNER)  # keys never manage
    with pytest.raises(Http404):
        access.resolve(alice, "pigs", api_key=write)  # the key decides, not who made it
    write.revoke()
    with pytest.raises(Http404):
        access.resolve(None, "finance", api_key=write)


def test_key_secret_is_hashed_and_looked_up(domain):
    key, secret = ApiKey.issue(domain=domain, name="crm", scope="read")
    assert secret.startswith("vsm_") and secret not in (key.key_hash, key.prefix)
    assert ApiKey.lookup(secret) == key
    assert ApiKey.lookup(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert ApiKey.lookup("not-a-key") is None


def test_domain_list_is_scoped(users, domain, other_domain):
    assert list(Domain.objects.for_user(users["viewer"])) == [domain]
    assert list(Domain.objects.for_user(users["stranger"])) == [other_domain]
