package dev.edgecomp.demo

import android.app.Activity
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.os.Bundle
import android.widget.Button
import android.widget.ImageView
import android.widget.TextView
import java.util.Locale
import java.util.concurrent.Executors

/**
 * Classifies the bundled sample images (assets/samples) with the latest bundle (deployed, else packed
 * into the APK): shows the top-3 labels with scores, the p50 latency over recent runs, the model's name
 * and size. All model work runs on one background thread; views are touched on the UI thread only.
 */
class MainActivity : Activity() {
    private val worker = Executors.newSingleThreadExecutor()
    private val latencies = LatencyWindow()
    private lateinit var bundle: ModelBundle
    private lateinit var engine: Engine
    private lateinit var preprocessor: Preprocessor
    private var samples: List<String> = emptyList()
    private var next = 0

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        val nextButton = findViewById<Button>(R.id.next)
        nextButton.isEnabled = false
        nextButton.setOnClickListener { classifyNext() }
        worker.execute {
            val loaded = runCatching { load() }
            runOnUiThread {
                loaded.fold(onSuccess = { nextButton.isEnabled = true; classifyNext() }, onFailure = ::showError)
            }
        }
    }

    override fun onDestroy() {
        worker.execute { if (::engine.isInitialized) engine.close() }
        worker.shutdown()
        super.onDestroy()
    }

    private fun load() {
        bundle = ModelBundle.latest(this)
            ?: throw ManifestException("no bundle: run `edgecomp deploy --device BUNDLE`, or build with -Pbundle=BUNDLE")
        val input = bundle.file.inputs.firstOrNull() ?: throw ManifestException("${bundle.file.path} lists no input")
        val model = bundle.manifest.model
        preprocessor = Preprocessor(input, model.normalization, model.layout, model.imagePreprocess)
        engine = openEngine(bundle, THREADS)
        samples = assets.list(SAMPLES).orEmpty().sorted().map { "$SAMPLES/$it" }
        if (samples.isEmpty()) throw IllegalStateException("no sample images in assets/$SAMPLES")
    }

    private fun classifyNext() {
        worker.execute {
            val shown = runCatching { classify(samples[next++ % samples.size]) }
            runOnUiThread { shown.fold(onSuccess = { show(it.first, it.second) }, onFailure = ::showError) }
        }
    }

    private fun classify(sample: String): Pair<Bitmap, String> {
        val image = assets.open(sample).use { BitmapFactory.decodeStream(it) } ?: error("cannot decode $sample")
        // with the manifest's image recipe the preprocessor resizes and crops as edgecomp did; else scale to fit
        val src = if (bundle.manifest.model.imagePreprocess != null) image
            else Bitmap.createScaledBitmap(image, preprocessor.width, preprocessor.height, true)
        val pixels = IntArray(src.width * src.height)
        src.getPixels(pixels, 0, src.width, 0, 0, src.width, src.height)
        latencies.add(engine.run(preprocessor.toBuffer(pixels, src.width, src.height)))
        val scores = softmax(decodeOutput(engine.output(), bundle.file.outputs[0]))
        val top = topK(scores, bundle.manifest.model.labels, 3)
        val file = bundle.file
        val text = buildString {
            append(String.format(Locale.US, "%s · %s (%s, %.2f MB)\n", bundle.manifest.model.name, file.path, file.dtype, file.bytes / 1e6))
            append("from ${bundle.origin}\n\n$sample\n")
            top.forEachIndexed { i, p -> append(String.format(Locale.US, "%d. %-12s %5.1f %%\n", i + 1, p.label, 100 * p.score)) }
            val p50 = latencies.p50() ?: 0.0
            append(String.format(Locale.US, "\np50 %.3f ms over the last %d runs (%d threads, XNNPACK)", p50, latencies.size, THREADS))
        }
        return Pair(Bitmap.createScaledBitmap(image, 256, 256 * image.height / image.width, false), text)
    }

    private fun show(image: Bitmap, text: String) {
        findViewById<ImageView>(R.id.sample).setImageBitmap(image)
        findViewById<TextView>(R.id.result).text = text
    }

    private fun showError(error: Throwable) {
        findViewById<TextView>(R.id.result).text = getString(R.string.error, error.message ?: error.javaClass.simpleName)
    }

    private companion object {
        const val THREADS = 4
        const val SAMPLES = "samples"
    }
}
