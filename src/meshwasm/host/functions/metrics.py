"""Metrics: counters, gauges and histograms, with Envoy's ids and checks."""

from __future__ import annotations

from meshwasm.host.abi import MetricType, Status
from meshwasm.host.functions import host_function
from meshwasm.host.state import VmState


@host_function("env.proxy_define_metric")
def proxy_define_metric(vm: VmState, metric_type: int, name_ptr: int, name_size: int, id_ptr: int) -> int:
    if metric_type > MetricType.HISTOGRAM:
        return Status.BAD_ARGUMENT
    metric_id = vm.define_metric(MetricType(metric_type), vm.mem.text(name_ptr, name_size))
    vm.mem.put_u32(id_ptr, metric_id)
    return Status.OK


@host_function("env.proxy_increment_metric")
def proxy_increment_metric(vm: VmState, metric_id: int, offset: int) -> int:
    kind = metric_id & 3
    if kind == MetricType.HISTOGRAM or kind > MetricType.HISTOGRAM:
        return Status.BAD_ARGUMENT
    metric = vm.metric(metric_id)
    if metric is None:
        return Status.NOT_FOUND
    if kind == MetricType.COUNTER and offset <= 0:
        return Status.BAD_ARGUMENT
    metric.value += offset
    return Status.OK


@host_function("env.proxy_record_metric")
def proxy_record_metric(vm: VmState, metric_id: int, value: int) -> int:
    metric = vm.metric(metric_id)
    if metric is None:
        return Status.NOT_FOUND
    value &= 0xFFFFFFFFFFFFFFFF  # a uint64 in Envoy
    if metric.type == MetricType.COUNTER:
        metric.value += value
    elif metric.type == MetricType.GAUGE:
        metric.value = value
    else:
        vm.record_sample(metric, value)
    return Status.OK


@host_function("env.proxy_get_metric")
def proxy_get_metric(vm: VmState, metric_id: int, ptr: int) -> int:
    if metric_id & 3 not in (MetricType.COUNTER, MetricType.GAUGE):
        return Status.BAD_ARGUMENT
    metric = vm.metric(metric_id)
    if metric is None:
        return Status.NOT_FOUND
    vm.mem.put_u64(ptr, metric.value)
    return Status.OK
