"""The policy evaluator of moto_iam.py against the rules of AWS's policy evaluation logic.

Run by tests/support/tests/iam.rs with the project venv: python -m unittest test_moto_iam
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html
"""

import unittest

from moto_iam import PolicyError, arn_like, condition_holds, decide


class Operators(unittest.TestCase):
    def test_string_equals_is_case_sensitive_and_ors_its_values(self):
        c = {"aws:requesttag/owner": ["Team"]}
        self.assertTrue(condition_holds("StringEquals", "aws:RequestTag/owner", ["x", "Team"], c))
        self.assertFalse(condition_holds("StringEquals", "aws:RequestTag/owner", "team", c))
        self.assertTrue(condition_holds("StringEqualsIgnoreCase", "aws:RequestTag/owner", "team", c))

    def test_key_names_are_case_insensitive(self):
        c = {"ecs:cluster": ["arn:aws:ecs:us-east-1:1:cluster/a"]}
        self.assertTrue(condition_holds("ArnEquals", "ECS:Cluster", "arn:aws:ecs:*:*:cluster/a", c))

    def test_string_like_wildcards(self):
        c = {"k": ["ecsw-team-a"]}
        self.assertTrue(condition_holds("StringLike", "k", "ecsw-*", c))
        self.assertTrue(condition_holds("StringLike", "k", "ecsw-team-?", c))
        self.assertFalse(condition_holds("StringLike", "k", "ecsw", c))

    def test_negated_operators_are_nor_over_their_values(self):
        c = {"k": ["b"]}
        self.assertFalse(condition_holds("StringNotEquals", "k", ["a", "b"], c))
        self.assertTrue(condition_holds("StringNotEquals", "k", ["a", "c"], c))

    def test_an_absent_key(self):
        # Positive operators do not hold, negated ones do, IfExists holds, Null tells.
        self.assertFalse(condition_holds("StringEquals", "k", "a", {}))
        self.assertTrue(condition_holds("StringNotEquals", "k", "a", {}))
        self.assertTrue(condition_holds("StringEqualsIfExists", "k", "a", {}))
        self.assertFalse(condition_holds("StringEqualsIfExists", "k", "a", {"k": ["b"]}))
        self.assertTrue(condition_holds("Null", "k", "true", {}))
        self.assertFalse(condition_holds("Null", "k", "false", {}))
        self.assertTrue(condition_holds("Null", "k", "false", {"k": ["a"]}))

    def test_set_operators(self):
        keys = {"aws:tagkeys": ["a", "b"]}
        self.assertTrue(condition_holds("ForAllValues:StringEquals", "aws:TagKeys", ["a", "b", "c"], keys))
        self.assertFalse(condition_holds("ForAllValues:StringEquals", "aws:TagKeys", ["a"], keys))
        self.assertTrue(condition_holds("ForAnyValue:StringEquals", "aws:TagKeys", ["a"], keys))
        self.assertFalse(condition_holds("ForAnyValue:StringEquals", "aws:TagKeys", ["c"], keys))
        # An absent key: ForAllValues holds (vacuously), ForAnyValue does not.
        self.assertTrue(condition_holds("ForAllValues:StringEquals", "aws:TagKeys", ["a"], {}))
        self.assertFalse(condition_holds("ForAnyValue:StringEquals", "aws:TagKeys", ["a"], {}))

    def test_arn_operators_match_component_by_component(self):
        c = {"k": ["arn:aws:ecs:us-east-1:123456789012:cluster/ecsw-a"]}
        self.assertTrue(condition_holds("ArnLike", "k", "arn:aws:ecs:*:*:cluster/ecsw-*", c))
        self.assertFalse(condition_holds("ArnLike", "k", "arn:aws:ecs:*:cluster/ecsw-*", c))
        self.assertTrue(condition_holds("ArnNotLike", "k", "arn:aws:sqs:*:*:*", c))

    def test_bool_and_numeric(self):
        self.assertTrue(condition_holds("Bool", "aws:SecureTransport", "true", {"aws:securetransport": ["true"]}))
        self.assertTrue(condition_holds("NumericLessThanEquals", "n", "10", {"n": ["10"]}))
        self.assertFalse(condition_holds("NumericLessThan", "n", "10", {"n": ["10"]}))

    def test_unknown_operators_fail_loudly(self):
        with self.assertRaises(PolicyError):
            condition_holds("DateGreaterThan", "aws:CurrentTime", "2020-01-01", {"aws:currenttime": ["x"]})


class Resources(unittest.TestCase):
    def test_resource_components_do_not_spill_over(self):
        self.assertTrue(arn_like("arn:aws:sqs:*:*:ecsw-*", "arn:aws:sqs:us-east-1:1:ecsw-q"))
        self.assertFalse(arn_like("arn:aws:sqs:*:ecsw-*", "arn:aws:sqs:us-east-1:1:ecsw-q"))
        # The resource component may hold colons.
        self.assertTrue(
            arn_like(
                "arn:aws:autoscaling:*:*:autoScalingGroup:*:autoScalingGroupName/ecsw-*",
                "arn:aws:autoscaling:us-east-1:1:autoScalingGroup:uuid:autoScalingGroupName/ecsw-g",
            )
        )
        # An account-less ARN (public SSM parameters) matches an empty or wildcard account.
        self.assertTrue(arn_like("arn:aws:ssm:*::parameter/aws/*", "arn:aws:ssm:us-east-1::parameter/aws/x"))
        self.assertTrue(arn_like("arn:aws:ssm:*:*:parameter/aws/*", "arn:aws:ssm:us-east-1::parameter/aws/x"))
        self.assertFalse(arn_like("arn:aws:ssm:*::parameter/aws/*", "arn:aws:ssm:us-east-1:1:parameter/aws/x"))
        # A statement scoped to an ARN never allows an action without resource-level permissions.
        self.assertFalse(arn_like("arn:aws:ec2:*:*:vpc/*", "*"))


class Decisions(unittest.TestCase):
    def policy(self, *statements):
        return [("p", {"Version": "2012-10-17", "Statement": list(statements)})]

    def test_explicit_deny_wins_and_nothing_allowed_is_denied(self):
        docs = self.policy(
            {"Effect": "Allow", "Action": "sqs:*", "Resource": "*"},
            {"Sid": "No", "Effect": "Deny", "Action": "sqs:DeleteQueue", "Resource": "arn:aws:sqs:*:*:kept"},
        )
        self.assertTrue(decide(docs, "sqs:DeleteQueue", "arn:aws:sqs:us-east-1:1:other", {})[0])
        allowed, why = decide(docs, "sqs:DeleteQueue", "arn:aws:sqs:us-east-1:1:kept", {})
        self.assertFalse(allowed)
        self.assertIn("p/No", why)
        self.assertFalse(decide(docs, "ecs:RunTask", "*", {})[0])

    def test_actions_are_case_insensitive_and_not_action_excludes(self):
        docs = self.policy({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})
        self.assertTrue(decide(docs, "ECS:runtask", "*", {})[0])
        self.assertFalse(decide(docs, "iam:PassRole", "*", {})[0])

    def test_not_resource(self):
        docs = self.policy({"Effect": "Allow", "Action": "sqs:*", "NotResource": "arn:aws:sqs:*:*:secret"})
        self.assertTrue(decide(docs, "sqs:SendMessage", "arn:aws:sqs:us-east-1:1:open", {})[0])
        self.assertFalse(decide(docs, "sqs:SendMessage", "arn:aws:sqs:us-east-1:1:secret", {})[0])

    def test_all_conditions_of_a_statement_must_hold(self):
        docs = self.policy(
            {
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": "*",
                "Condition": {
                    "StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"},
                    "ArnLike": {"iam:AssociatedResourceArn": "arn:aws:ecs:*:*:task-definition/*"},
                },
            }
        )
        c = {"iam:passedtoservice": ["ecs-tasks.amazonaws.com"]}
        self.assertFalse(decide(docs, "iam:PassRole", "arn:aws:iam::1:role/r", c)[0])
        c["iam:associatedresourcearn"] = ["arn:aws:ecs:us-east-1:1:task-definition/f:1"]
        self.assertTrue(decide(docs, "iam:PassRole", "arn:aws:iam::1:role/r", c)[0])


if __name__ == "__main__":
    unittest.main()
