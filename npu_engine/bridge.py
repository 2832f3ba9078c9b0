"""The one bridge from a blocking generation to whoever consumes its stream: the generation runs on
a thread of its own and posts StreamChunks (then the result, or the error it raised) to a callable
the consumer gives, a queue.Queue's `put` for a plain iterator or the event loop's for the server.
Setting `stop` ends the generation at its next piece of text."""

import threading
from collections.abc import Callable

from npu_engine.generation import TextSink
from npu_engine.request import GenerationResult, StreamChunk

Post = Callable[[StreamChunk | BaseException], None]


class Run:
    """One generation in flight."""

    def __init__(
        self,
        generate: Callable[[TextSink], GenerationResult],
        post: Post,
        relay_text: bool = True,
        stop: threading.Event | None = None,
    ) -> None:
        self.stop = stop or threading.Event()
        self._generate = generate
        self._post = post
        self._relay_text = relay_text
        self._thread = threading.Thread(target=self._work, name="npu-engine-generate", daemon=True)
        self._thread.start()

    def _sink(self, text: str) -> bool:
        if self._relay_text:
            self._post(StreamChunk(text))
        return self.stop.is_set()

    def _work(self) -> None:
        try:
            result = self._generate(self._sink)
        except BaseException as error:  # handed to the consumer
            self._post(error)
            return
        self._post(StreamChunk(result=result))

    def join(self) -> None:
        self._thread.join()
