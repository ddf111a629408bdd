"""Capacity: Erlang B planning (``erlang``) and the workload simulator (``simulate``)."""
