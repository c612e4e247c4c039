package dev.edgecomp.demo

import android.app.Activity
import android.os.Build
import android.os.Bundle
import android.util.Log
import java.io.File
import kotlin.concurrent.thread
import org.json.JSONObject

/**
 * Headless benchmark, started over adb (`edgecomp profile --device --via app` does this):
 *
 *     adb shell am start -S -n dev.edgecomp.demo/.BenchmarkActivity --es bundle DIR [--es file model.tflite|model.pte]
 *         [--ei runs 50] [--ei threads 4] [--ei warmup 5] [--es out DIR/benchmark.json]
 *
 * Loads the bundle, runs the warm-up and the timed inferences on a zero input with LiteRT (XNNPACK) for a
 * .tflite or ExecuTorch (XNNPACK delegate) for a .pte,
 * writes the result (BenchmarkReport.kt) to `out` atomically, failures included, and finishes.
 */
class BenchmarkActivity : Activity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val dir = intent.getStringExtra("bundle")
        val file = intent.getStringExtra("file")
        val runs = intent.getIntExtra("runs", 50)
        val threads = intent.getIntExtra("threads", 4)
        val warmup = intent.getIntExtra("warmup", 5)
        val out = File(intent.getStringExtra("out") ?: File(dir ?: filesDir.path, "benchmark.json").path)
        thread(name = "edgecomp-benchmark") {
            val report = try {
                requireNotNull(dir) { "no bundle: pass --es bundle DIR" }
                require(runs >= 1 && threads >= 1 && warmup >= 0) { "runs and threads must be at least 1, warmup 0 or more" }
                benchmark(File(dir), file, runs, threads, warmup)
            } catch (e: Throwable) { // native load errors too: every failure must reach the result file
                Log.e(TAG, "benchmark failed", e)
                benchmarkError("${e.javaClass.simpleName}: ${e.message}")
            }
            writeAtomically(out, report.toString(2))
            runOnUiThread { finish() }
        }
    }

    private fun benchmark(dir: File, file: String?, runs: Int, threads: Int, warmup: Int): JSONObject {
        val start = System.nanoTime()
        val bundle = ModelBundle.fromDir(dir, file)
        openEngine(bundle, threads).use { engine ->
            val initMs = (System.nanoTime() - start) / 1e6
            repeat(warmup) { engine.run() }
            val times = List(runs) { engine.run() }
            Log.i(TAG, "${bundle.file.path}: $runs runs on $threads threads, p50 ${percentile(times, 50.0)} ms")
            return benchmarkReport(bundle.manifest.model.name, bundle.file.path, threads, warmup, initMs, times, deviceInfo(),
                RUNTIMES.getValue(bundle.file.format))
        }
    }

    private fun deviceInfo(): Map<String, String> = mapOf(
        "model" to Build.MODEL,
        "manufacturer" to Build.MANUFACTURER,
        "android" to Build.VERSION.RELEASE,
        "sdk" to Build.VERSION.SDK_INT.toString(),
        "abi" to Build.SUPPORTED_ABIS.firstOrNull().orEmpty()
    )

    private fun writeAtomically(target: File, text: String) {
        target.parentFile?.mkdirs()
        val partial = File(target.path + ".partial")
        partial.writeText(text)
        if (partial.renameTo(target)) {
            Log.i(TAG, "result written to $target")
        } else {
            Log.e(TAG, "could not write $target")
        }
    }
}
