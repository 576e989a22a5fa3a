"""The stream engine: walks a byte source as one or more (nested) format contexts."""

from xenmig_core.engine.consumer import Consumer, MultiConsumer
from xenmig_core.engine.context import Action, Record, StreamContext, Tally
from xenmig_core.engine.walk import Engine, WalkResult

__all__ = ["Action", "Consumer", "Engine", "MultiConsumer", "Record", "StreamContext", "Tally",
           "WalkResult"]
