"""Adapters to other libraries' interfaces: :mod:`~cascade.integrations.sklearn` (an estimator)."""
