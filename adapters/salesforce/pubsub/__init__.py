"""Generated modules of the Salesforce Pub/Sub API proto (see pubsub_api.proto)."""
