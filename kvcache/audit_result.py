"""The result's `audit` block: each host's settings (kvcache.host_audit) at the start and the end of the run, what
changed during it, and the settings in which the hosts differ from one another."""

from typing import List, Optional

from kvcache.host_audit import changes


def audit_block(payloads: List[dict]) -> Optional[dict]:
    """None when no rank audited its host (an older engine, a run that failed in its setup)."""
    hosts = []
    for payload in payloads:
        if "audit" not in payload:
            continue
        ranks = [p["rank"] for p in payloads if p["host"] == payload["host"]]
        hosts.append({"host": payload["host"], "ranks": ranks, **payload["audit"]})
    if not hosts:
        return None
    first = hosts[0]["start"]
    differ = sorted({name for host in hosts[1:] for name in changes(first, host["start"])})
    return {"per_host": hosts, "differs_between_hosts": differ}


def audit_warnings(block: dict) -> List[str]:
    lines = []
    for host in block["per_host"]:
        if host["changed"]:
            lines.append(f"on {host['host']} these settings changed during the run: {', '.join(host['changed'])}")
    if block["differs_between_hosts"]:
        lines.append(
            "the hosts differ in " + ", ".join(block["differs_between_hosts"]) + ": their figures may differ for it"
        )
    return lines
