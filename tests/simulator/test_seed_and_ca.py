"""Seeding (consistency, determinism, shape) and the throwaway CA."""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509

from monitor.simulator.ca import CertificateAuthority, create_self_signed_client_certificate
from monitor.simulator.delta import DeltaRequest, plan_round
from monitor.simulator.properties import GROUP_TYPE, USER_TYPE
from monitor.simulator.seed import group_sizes, seed
from monitor.simulator.tenant import SimTenant
from tests.simulator.support import TENANT_ID


def _seeded() -> SimTenant:
    tenant = SimTenant(TENANT_ID, "Contoso")
    seed(tenant, users=5000, groups=500, memberships=50_000, rng_seed=4)
    return tenant


def test_seeded_memberships_reference_existing_objects() -> None:
    tenant = _seeded()
    assert len(tenant.users) == 5000
    assert len(tenant.groups) == 500
    total = sum(len(members) for members in tenant.members.values())
    assert 49_000 <= total <= 50_000
    for members in tenant.members.values():
        for member_id, kind in members.items():
            assert tenant.member_type(member_id) == kind
    upns = [user["userPrincipalName"] for user in tenant.users.values()]
    assert len(set(upns)) == len(upns)


def test_seeded_tenant_has_a_realistic_shape() -> None:
    tenant = _seeded()
    users = list(tenant.users.values())
    guests = sum(user["userType"] == "Guest" for user in users)
    disabled = sum(not user["accountEnabled"] for user in users)
    assert 0 < guests < len(users) * 0.1
    assert 0 < disabled < len(users) * 0.1
    groups = list(tenant.groups.values())
    assert any(group.get("isAssignableToRole") for group in groups)
    assert any(group["groupTypes"] == ["Unified"] and group["mailEnabled"] for group in groups)
    assert any(group["securityEnabled"] and not group["mailEnabled"] for group in groups)
    sizes = sorted((len(members) for members in tenant.members.values()), reverse=True)
    assert sizes[0] > 10 * sizes[len(sizes) // 2]  # a few large groups, most small
    kinds = {kind for members in tenant.members.values() for kind in members.values()}
    assert {USER_TYPE, GROUP_TYPE} < kinds and len(kinds) >= 4


def test_seeding_is_deterministic() -> None:
    first, second = _seeded(), _seeded()
    assert list(first.users) == list(second.users)
    assert first.members == second.members


def test_seeded_objects_are_delta_visible() -> None:
    tenant = SimTenant(TENANT_ID, "Contoso")
    empty = plan_round(tenant, DeltaRequest("groups")).version
    seed(tenant, users=50, groups=5, memberships=100)
    planned = plan_round(tenant, DeltaRequest("groups", since=empty))
    values, _ = planned.page(0, 0)
    members = sum(len(obj.get("members@delta", [])) for obj in values)
    assert {obj["id"] for obj in values} == set(tenant.groups)
    assert members == sum(len(m) for m in tenant.members.values())


def test_group_sizes_sum_and_cap() -> None:
    import random

    sizes = group_sizes(10_000, 100, 500, random.Random(1))
    assert sum(sizes) == 10_000
    assert max(sizes) <= 500


def test_ca_issues_a_server_certificate_clients_trust(tmp_path: Path) -> None:
    ca = CertificateAuthority.create()
    server = ca.issue_server_context(("localhost", "127.0.0.1"))
    assert isinstance(server, ssl.SSLContext)
    cert_pem, _ = ca.issue_server_certificate(("localhost", "127.0.0.1"))
    cert = x509.load_pem_x509_certificate(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    cert.verify_directly_issued_by(ca.certificate)
    bundle = ca.write_bundle(tmp_path / "ca.pem")
    assert bundle.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    ssl.create_default_context(cafile=str(bundle))


def test_self_signed_client_certificate() -> None:
    cert_pem, key_pem = create_self_signed_client_certificate("app")
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.subject.rfc4514_string() == "CN=app"
    assert b"PRIVATE KEY" in key_pem
