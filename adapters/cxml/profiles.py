"""What the trading networks document about cXML exchanges, as defaults a ``profile:`` setting selects.

* **coupa** (compass.coupa.com, "cXML Purchase Orders"): the supplier must answer an OrderRequest with a cXML
  ``Response`` within **60 seconds**; on a 5xx status Coupa retries **5 times at 1-hour intervals**, on a 4xx
  it does not retry; a connection that times out is retried up to 4 times at 5-minute intervals. Credentials:
  From/To domain and identity plus the Sender's SharedSecret. The same rules are applied here to the suppliers
  we post to and promised to the suppliers that post to us.
* **ariba** (SAP Ariba KB0403039, FAQ 141226, "PO-7" error): a purchase order that cannot be delivered is resent
  for **24 hours** before it is marked failed; a cXML answer with a temporary-error status (5xx) counts as
  "could not deliver, try again", anything else that is not 2xx as a failure. Credentials are Ariba Network ids
  (domain ``NetworkID``, ``AN…``) with the SharedSecret set in the supplier's Ariba Network account.
* **generic**: the cXML User's Guide alone (2xx success, 4xx permanent, 5xx transient).

``required_extrinsics`` are names every outbound OrderRequestHeader must carry as ``Extrinsic`` (a buyer's
questionnaire lists them, e.g. the Coupa cXML Supplier Questionnaire); none are required by default because
neither network publishes a fixed list.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PROFILES", "Profile"]


@dataclass(frozen=True)
class Profile:
    name: str
    #: Seconds we wait for the synchronous Response to an OrderRequest.
    timeout: float
    #: Delay before retrying after a 5xx answer (the network's documented retry interval), or None (bus policy).
    retry_after: float | None
    #: How long the network keeps retrying a failed delivery (documentation only; the bus's retry policy rules).
    retry_window: float | None
    #: Seconds within which our answer to an inbound document is expected.
    answer_within: float
    user_agent: str
    credential_domain: str


PROFILES: dict[str, Profile] = {
    "generic": Profile("generic", timeout=60.0, retry_after=None, retry_window=None, answer_within=60.0,
                       user_agent="ironbus cXML", credential_domain="DUNS"),
    "coupa": Profile("coupa", timeout=60.0, retry_after=3600.0, retry_window=5 * 3600.0, answer_within=60.0,
                     user_agent="ironbus cXML", credential_domain="DUNS"),
    "ariba": Profile("ariba", timeout=60.0, retry_after=3600.0, retry_window=24 * 3600.0, answer_within=60.0,
                     user_agent="ironbus cXML", credential_domain="NetworkID"),
}
