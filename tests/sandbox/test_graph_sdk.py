"""The official Microsoft Graph SDK for Python works against the sandbox unchanged."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.message import Message
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.recipient import Recipient
from msgraph.generated.users.item.messages.messages_request_builder import MessagesRequestBuilder
from msgraph.generated.users.item.send_mail.send_mail_post_request_body import (
    SendMailPostRequestBody,
)
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_request_adapter import options as sdk_options
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory  # type: ignore[import-untyped]

from qargo_desktop.sandbox.server import Sandbox

MAILBOX = "dispatch@northwind-haulage.example"
SCOPES = ["https://graph.microsoft.com/Mail.ReadWrite", "https://graph.microsoft.com/Mail.Send"]


class SandboxCredential:
    """An azure-core token credential that hands out a sandbox access token."""

    def __init__(self, sandbox: Sandbox, username: str) -> None:
        self.sandbox = sandbox
        self.username = username
        self.requested: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **_kwargs: Any) -> AccessToken:
        self.requested.append(scopes)
        response = self.sandbox.world.identity.issue_tokens(self.username, SCOPES)
        expires_on = int(self.sandbox.world.clock.now()) + int(response["expires_in"])
        return AccessToken(response["access_token"], expires_on)


async def with_client(sandbox: Sandbox, work: Any) -> Any:
    info = sandbox.info
    trust = ssl.create_default_context(cafile=str(info.ca_certificate))
    # The SDK's own options matter: client.me asks for /users/me-token-to-replace and a
    # middleware option turns that into /me.
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(verify=trust, trust_env=False), options=sdk_options
    )
    credential = SandboxCredential(sandbox, MAILBOX)
    auth = AzureIdentityAuthenticationProvider(
        credential, scopes=["https://graph.microsoft.com/.default"], allowed_hosts=["127.0.0.1"]
    )
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = info.graph_base_url
    client = GraphServiceClient(request_adapter=adapter)
    try:
        return await work(client, credential)
    finally:
        await http.aclose()


def test_sdk_reads_me_and_lists_messages(sandbox: Sandbox) -> None:
    async def work(client: GraphServiceClient, credential: SandboxCredential) -> None:
        me = await client.me.get()
        assert me is not None
        assert me.user_principal_name == MAILBOX
        assert me.display_name == "Dispatch Desk"
        assert credential.requested, "the SDK never asked the credential for a token"

        messages = await client.me.messages.get()
        assert messages is not None and messages.value
        assert all(m.received_date_time is not None for m in messages.value)
        assert all(m.internet_message_id for m in messages.value)

    asyncio.run(with_client(sandbox, work))


def test_sdk_sends_pages_and_deletes(sandbox: Sandbox) -> None:
    async def work(client: GraphServiceClient, _credential: SandboxCredential) -> None:
        for index in range(3):
            body = SendMailPostRequestBody(
                message=Message(
                    subject=f"SDK run {index}",
                    body=ItemBody(content_type=BodyType.Text, content="Sent by the Graph SDK"),
                    to_recipients=[Recipient(email_address=EmailAddress(address=MAILBOX))],
                ),
                save_to_sent_items=False,
            )
            await client.me.send_mail.post(body)
        sandbox.world.clock.advance(sandbox.options.delivery_delay_s)

        query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
            filter="startswith(subject,'SDK run')",
            select=["subject", "receivedDateTime", "internetMessageId"],
            top=2,
        )
        page = await client.me.messages.get(RequestConfiguration(query_parameters=query))
        assert page is not None and page.value is not None
        found = [m.subject for m in page.value]
        assert page.odata_next_link
        next_page = await client.me.messages.with_url(page.odata_next_link).get()
        assert next_page is not None and next_page.value is not None
        found += [m.subject for m in next_page.value]
        assert sorted(str(subject) for subject in found) == ["SDK run 0", "SDK run 1", "SDK run 2"]

        first = page.value[0]
        assert first.id is not None
        await client.me.messages.by_message_id(first.id).delete()
        with pytest.raises(ODataError) as excinfo:
            await client.me.messages.by_message_id(first.id).get()
        assert excinfo.value.response_status_code == 404
        assert excinfo.value.error is not None
        assert excinfo.value.error.code == "ErrorItemNotFound"

    asyncio.run(with_client(sandbox, work))
    assert sandbox.world.mail_store.sent_count == 3
