"""Policy enforcement at the edge: the policies API, the topic subscription, rate limits."""
