# Copyright: storagebench developers
# MIT License (see LICENSE at the collection root)
"""The kvcache_* variables of a host that can be resolved before facts are gathered."""

DOCUMENTATION = r"""
---
name: kvcache_variables
version_added: "0.1.0"
short_description: The host's kvcache_* variables that can be resolved before facts are gathered
description:
  - Returns one mapping of variable name to value for every variable of the host whose name starts with C(kvcache_).
  - A variable whose value needs something not known yet (a fact, a variable set by a later task) is left out;
    the playbooks check it later, where it is used (the roles' argument specs, kvcache_command, the engine).
  - The kvcache playbooks' first play checks what this returns with
    P(storagebench.kvcache.kvcache_variable_problems#filter).
author:
  - storagebench developers (!UNKNOWN)
options: {}
"""

EXAMPLES = r"""
- name: Check the shared variables before anything runs
  ansible.builtin.assert:
    that: problems | length == 0
    fail_msg: "{{ problems | join('; ') }}"
  vars:
    found: "{{ query('storagebench.kvcache.kvcache_variables')[0] }}"
    problems: "{{ found | storagebench.kvcache.kvcache_variable_problems }}"
"""

RETURN = r"""
_raw:
  description: One mapping of variable name to its resolved value.
  type: list
  elements: dict
"""

from ansible.errors import AnsibleUndefinedVariable  # noqa: E402
from ansible.plugins.lookup import LookupBase  # noqa: E402

PREFIX = "kvcache_"


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        resolved = {}
        for name in sorted(variables or {}):
            if not name.startswith(PREFIX):
                continue
            try:
                resolved[name] = self._templar.template(variables[name])
            except AnsibleUndefinedVariable:
                continue  # needs facts or later tasks: checked where it is used
        return [resolved]
