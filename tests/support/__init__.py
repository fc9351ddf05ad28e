"""Helpers of the test suite (not tests): the replay sampler, the 2-process workers, FSDP on CPU."""
