package dev.edgecomp.demo

import org.json.JSONArray
import org.json.JSONObject

/** Version of the result file BenchmarkActivity writes (edgecomp/android/via_app.py reads it). */
const val RESULT_VERSION = 1

/** The result of a benchmark: every timed run and its summary, with where it ran. */
fun benchmarkReport(
    model: String,
    file: String,
    threads: Int,
    warmup: Int,
    initMs: Double,
    timesMs: List<Double>,
    device: Map<String, String>,
    runtime: String = "litert"
): JSONObject = JSONObject()
    .put("result_version", RESULT_VERSION)
    .put("status", "ok")
    .put("model", model)
    .put("file", file)
    .put("runtime", runtime)
    .put("delegate", "xnnpack")
    .put("threads", threads)
    .put("warmup", warmup)
    .put("runs", timesMs.size)
    .put("init_ms", initMs)
    .put("times_ms", JSONArray(timesMs))
    .put("p50_ms", percentile(timesMs, 50.0))
    .put("p90_ms", percentile(timesMs, 90.0))
    .put("mean_ms", timesMs.average())
    .put("device", JSONObject(device))

/** The result file of a benchmark that failed, saying why. */
fun benchmarkError(message: String): JSONObject = JSONObject()
    .put("result_version", RESULT_VERSION)
    .put("status", "error")
    .put("error", message)
