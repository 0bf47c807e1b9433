"""The iron-triangle demo (``make demo`` runs ``python -m demo``) and the building blocks it shares with the
flow tests: master data provisioned in three Tryton databases (:mod:`demo.masterdata`) and what a CRM user or a
supplier does by hand (:mod:`demo.actors`)."""
