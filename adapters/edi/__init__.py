"""What the EDI adapters (``x12``, ``edifact``) share: the adapter (:mod:`~adapters.edi.adapter`, made of
:mod:`~adapters.edi.system`: partners and transports, :mod:`~adapters.edi.outbound`: send, resend, and
:mod:`~adapters.edi.inbound`: receive, acknowledge, reconcile), the neutral model of a received interchange
(:mod:`~adapters.edi.model`), segments as plain data both ways (:mod:`~adapters.edi.segments`), the journal state
(:mod:`~adapters.edi.ledger`), the settings schema (:mod:`~adapters.edi.settings`) and the syntax of each standard
(:mod:`~adapters.edi.x12syntax`, :mod:`~adapters.edi.edifactsyntax`). A standard plugs in through
:class:`~adapters.edi.standard.Standard`.
"""
