"""SQS ReceiveMessage without moto's cost proportional to the queue length per message.

moto 5.2.5 checks each message it hands out against the queue's retention period by computing
every queue attribute (`get_queue_attributes`, whose ApproximateNumberOf* counters each scan the
whole queue), so a receive costs O(queue length) per message returned: about 11 ms per message
with 300 queued, which caps any consumer far below what the service allows and hides what a
worker's own receive pattern costs. This reads the one attribute the check needs; the result is
the same: a message older than MessageRetentionPeriod is not handed out.
"""

from moto.core.utils import unix_time
from moto.sqs.models import SQSBackend


def is_message_valid_based_on_retention_period(self, queue_name, message):
    queue = self.get_queue(queue_name)
    retain_until = int(queue.message_retention_period) + message.sent_timestamp / 1000
    return retain_until > unix_time()


SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period
