"""Tests of the Redis transport, against a real ``redis-server`` the tests start."""
