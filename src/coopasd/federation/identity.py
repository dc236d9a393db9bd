"""Which factory each node is: a reply speaks for the factory of the node it came from, never another.

The factory name in a reply is the factory's own word; the reply's source node id
(``Message.metadata.src_node_id``) is set by Flower's SuperLink for the node that sent it (with
``--enable-supernode-auth`` that node signed in with its registered key). The server binds each node
to the factory name of its first reply and from then on rejects a reply whose name is not its node's,
and a node that claims a factory another node already is. When two new nodes claim one new name in
the same exchange, neither is bound or trusted. Bindings last for one server process (a resumed
simulation gets new node ids and binds afresh).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from flwr.app import Message

from coopasd.federation.records import claimed_name

log = logging.getLogger(__name__)


@dataclass
class Identities:
    """node id -> factory name, bound at first contact (or given up front in ``by_node``)."""

    by_node: dict[int, str] = field(default_factory=dict)

    def node_of(self, name: str) -> int | None:
        return next((node for node, bound in self.by_node.items() if bound == name), None)

    def check(self, replies: Iterable[Message]) -> tuple[list[Message], dict[str, str]]:
        """The replies that speak for their own node's factory (new nodes get bound), and
        {who: reason} for the others (who: the node's factory when bound, else ``node <id>``)."""
        kept: list[Message] = []
        rejected: dict[str, str] = {}
        new: dict[str, list[Message]] = {}
        for msg in replies:
            if msg.has_error():  # a failed node's reply has no content: the screening logs it
                kept.append(msg)
                continue
            node, name = msg.metadata.src_node_id, claimed_name(msg)
            bound = self.by_node.get(node)
            if name is None or name == bound:
                kept.append(msg)
            elif bound is not None:
                rejected[bound] = f"node {node} is factory '{bound}' but this reply claims to be '{name}'"
            elif (other := self.node_of(name)) is not None:
                rejected[f"node {node}"] = f"claims to be '{name}', which is node {other}"
            else:
                new.setdefault(name, []).append(msg)
        for name, claims in new.items():
            if len(claims) == 1:
                self.by_node[claims[0].metadata.src_node_id] = name
                kept.append(claims[0])
                continue
            nodes = [m.metadata.src_node_id for m in claims]
            for node in nodes:
                rejected[f"node {node}"] = f"nodes {', '.join(map(str, nodes))} all claim to be '{name}'"
        for who, reason in rejected.items():
            log.warning("rejecting the reply of %s: %s", who, reason)
        return kept, rejected
