"""The sentences the serving layer says to an analyst about a question's place in the queue, its cancelling,
and re-running a history entry (core/messages.py: ids for the dashboard's translation, English as it was)."""
from __future__ import annotations

from core.messages import MessageText

UNLOADING = MessageText("serving.unloading", "The model is being unloaded; ask again in a moment.")
UNLOADED_BEFORE_START = MessageText("serving.unloaded_before_start",
                                    "The model was unloaded before this question started; ask again.")
QUEUE_FULL = MessageText("serving.queue_full", "{waiting} questions are already waiting; try again in a while.")
CLIENT_QUEUE_FULL = MessageText("serving.client_queue_full",
                                "This client already has {waiting} questions waiting (the most one client may "
                                "queue); wait for an answer before sending more.")
CANCELLED_BEFORE_START = MessageText("serving.cancelled_before_start", "The question was cancelled before it started.")
STOPPED = MessageText("serving.stopped", "Stopped before the answer was complete (the page was left or rerun).")
NO_SUCH_ENTRY = MessageText("history.no_such_entry", "History entry #{entry_id} does not exist.")
IMAGE_NOT_KEPT = MessageText("history.image_not_kept", "The image of #{entry_id} was not kept (it could not be read "
                                                       "when it was asked), so it cannot be re-run.")
