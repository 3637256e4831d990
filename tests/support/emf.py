"""Checks a document against CloudWatch's Embedded Metric Format specification, rule by rule.

https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
A metric target is a number, an array of at most 100 numbers, or (as AWS's own CloudWatch agent
and the collector's awsemf exporter write histograms) an object with `Values` and `Counts` arrays
of equal length, at most 100 each, and optional `Max`, `Min`, `Count`, `Sum`.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

UNITS = frozenset(
    [
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    ]
)
MAX_VALUES = 100
MAX_METRICS = 100
MAX_DIMENSIONS = 30


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _metric_value_errors(name: str, value: Any) -> list[str]:
    if _number(value):
        return []
    if isinstance(value, list):
        if len(value) > MAX_VALUES or not all(_number(v) for v in value):
            return [f"{name}: an array of at most {MAX_VALUES} numbers"]
        return []
    if isinstance(value, dict):
        values, counts = value.get("Values"), value.get("Counts")
        errors = []
        if not isinstance(values, list) or not isinstance(counts, list) or len(values) != len(counts):
            errors.append(f"{name}: Values and Counts must be arrays of the same length")
        elif len(values) > MAX_VALUES or not all(_number(v) for v in values + counts):
            errors.append(f"{name}: at most {MAX_VALUES} numeric Values and Counts")
        for key in set(value) - {"Values", "Counts", "Max", "Min", "Count", "Sum"}:
            errors.append(f"{name}: unknown member {key}")
        for key in {"Max", "Min", "Count", "Sum"} & set(value):
            if not _number(value[key]):
                errors.append(f"{name}.{key} must be a number")
        return errors
    return [f"{name}: a metric target must be a number, an array of numbers, or Values/Counts"]


def emf_errors(document: Any) -> list[str]:
    """Every way `document` breaks the specification; empty when it is a valid EMF document."""
    if not isinstance(document, dict):
        return ["the root must be a JSON object"]
    metadata = document.get("_aws")
    if not isinstance(metadata, dict):
        return ["_aws must be an object"]
    errors = [f"_aws has an unknown member {key}" for key in set(metadata) - {"Timestamp", "CloudWatchMetrics"}]
    if not isinstance(metadata.get("Timestamp"), int) or isinstance(metadata.get("Timestamp"), bool):
        errors.append("_aws.Timestamp must be an integer (milliseconds since the epoch)")
    directives = metadata.get("CloudWatchMetrics")
    if not isinstance(directives, list) or not directives:
        return [*errors, "_aws.CloudWatchMetrics must be a non-empty array"]
    for directive in directives:
        if not isinstance(directive, dict):
            errors.append("a MetricDirective must be an object")
            continue
        errors += [
            f"MetricDirective: unknown member {k}" for k in set(directive) - {"Namespace", "Dimensions", "Metrics"}
        ]
        namespace = directive.get("Namespace")
        if not isinstance(namespace, str) or not 1 <= len(namespace) <= 1024:
            errors.append("Namespace must be a string of 1 to 1024 characters")
        dimension_sets = directive.get("Dimensions")
        if not isinstance(dimension_sets, list) or not dimension_sets:
            errors.append("Dimensions must be a non-empty array of DimensionSets")
            dimension_sets = []
        for dimension_set in dimension_sets:
            if not isinstance(dimension_set, list) or len(dimension_set) > MAX_DIMENSIONS:
                errors.append(f"a DimensionSet is an array of at most {MAX_DIMENSIONS} keys")
                continue
            for key in dimension_set:
                if not isinstance(document.get(key), str) or not document[key]:
                    errors.append(f"dimension {key!r} must be a non-empty string member of the root")
        metrics = directive.get("Metrics")
        if not isinstance(metrics, list) or len(metrics) > MAX_METRICS:
            errors.append(f"Metrics must be an array of at most {MAX_METRICS} MetricDefinitions")
            metrics = []
        for definition in metrics:
            if not isinstance(definition, dict) or not isinstance(definition.get("Name"), str):
                errors.append("a MetricDefinition needs a Name")
                continue
            errors += [
                f"MetricDefinition: unknown member {k}" for k in set(definition) - {"Name", "Unit", "StorageResolution"}
            ]
            if "Unit" in definition and definition["Unit"] not in UNITS:
                errors.append(f"{definition['Name']}: unit {definition['Unit']!r} is not a CloudWatch unit")
            name = definition["Name"]
            if name not in document:
                errors.append(f"metric {name!r} has no member on the root")
            else:
                errors += _metric_value_errors(name, document[name])
    return errors
