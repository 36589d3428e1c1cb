"""Recipe: two tenants on one server, each an ACL user confined to its own key prefix."""

import asyncio
import secrets
from urllib.parse import urlsplit, urlunsplit

import flue_models as fm
from flue_models import WorkflowRun

TENANTS = ("tenant-a", "tenant-b")


# --8<-- [start:acl]
def tenant_rules(prefix: str, password: str) -> list[str]:
    """The minimal rights of docs/security.md, for one prefix."""
    return [
        "reset",
        "on",
        f">{password}",
        f"~{prefix}::*",
        "resetchannels",  # reset first
        "-@all",
        "+@read",
        "+@write",
        "-@dangerous",
        "+evalsha",
        "+eval",
        "+multi",
        "+exec",
        "+discard",
        "+ping",
        "+hello",
        "+client|setname",
        "+time",
        "+info",
    ]


def as_user(url: str, user: str, password: str) -> str:
    """The server's URL with this user's credentials."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


# --8<-- [end:acl]


async def main() -> None:
    async with fm.connect(key_prefix="recipe-tenants-admin") as admin:
        passwords = {tenant: secrets.token_urlsafe(24) for tenant in TENANTS}
        try:
            # --8<-- [start:use]
            for tenant, password in passwords.items():  # once, by an administrator
                await admin.client.execute_command(
                    "ACL", "SETUSER", tenant, *tenant_rules(tenant, password)
                )
            url = admin.url.url
            async with fm.connect(
                as_user(url, "tenant-a", passwords["tenant-a"]), key_prefix="tenant-a"
            ) as a:
                run = await WorkflowRun.start("summarize", db=a)
                secret_key = a.keys.record("workflow_run", run.id)
            async with fm.connect(
                as_user(url, "tenant-b", passwords["tenant-b"]), key_prefix="tenant-b"
            ) as b:
                print("tenant-b sees runs:", len((await WorkflowRun.list(db=b)).items))
                try:
                    await b.client.hgetall(secret_key)  # tenant-a's run, by its key name
                except fm.errors.CommandError as refused:
                    print(
                        "tenant-b reading tenant-a's key:",
                        "refused" if "NOPERM" in str(refused) else refused,
                    )
            # --8<-- [end:use]
        finally:
            for tenant in TENANTS:
                await admin.client.execute_command("ACL", "DELUSER", tenant)
                keys = [k async for k in admin.client.scan_iter(match=f"{tenant}::*")]
                if keys:
                    await admin.client.delete(*keys)


if __name__ == "__main__":
    asyncio.run(main())
