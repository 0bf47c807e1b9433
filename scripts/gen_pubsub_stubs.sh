#!/bin/sh
# Regenerate the committed Python modules of the Salesforce Pub/Sub API proto (needs grpcio-tools).
set -eu
cd "$(dirname "$0")/.."
.venv/bin/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
    adapters/salesforce/pubsub/pubsub_api.proto
# Generated code keeps protoc's style: ruff and mypy leave it alone.
for f in adapters/salesforce/pubsub/pubsub_api_pb2.py adapters/salesforce/pubsub/pubsub_api_pb2.pyi \
         adapters/salesforce/pubsub/pubsub_api_pb2_grpc.py; do
    { printf '# ruff: noqa\n# mypy: ignore-errors\n'; cat "$f"; } > "$f.tmp" && mv "$f.tmp" "$f"
done
