"""Connecting to Ray (local or a cluster), checking resources, and run storage (local or s3://)."""
