"""The lab: incidents reproduced on the real Linux TCP stack inside throw-away network namespaces."""
