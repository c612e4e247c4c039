package dev.edgecomp.demo

import java.io.Closeable
import java.nio.ByteBuffer
import java.nio.ByteOrder
import org.tensorflow.lite.Interpreter

/** The logcat tag of the app: `adb logcat -s edgecomp`. */
const val TAG = "edgecomp"

/** A model ready to run on the CPU: one input in, the first output out, in the manifest's byte layout. */
interface Engine : Closeable {
    /** A zero-filled input of the model's size: what the benchmark feeds. */
    val zeroInput: ByteBuffer

    /** Runs one inference on [input] (the bytes of the model's first input); returns its wall time in ms. */
    fun run(input: ByteBuffer = zeroInput): Double

    /** The first output of the last run (a read-only view). */
    fun output(): ByteBuffer
}

/** The engine for the bundle's chosen file: LiteRT for a .tflite, ExecuTorch for a .pte. */
fun openEngine(bundle: ModelBundle, threads: Int): Engine = when (bundle.file.format) {
    PTE_FORMAT -> ExecuTorchEngine(bundle.model, bundle.file)
    else -> LiteRtEngine(bundle.model, threads)
}

/** LiteRT's interpreter on the CPU with XNNPACK, with buffers for one input and one output. */
class LiteRtEngine(model: ByteBuffer, threads: Int) : Engine {
    private val interpreter = Interpreter(model, Interpreter.Options().setNumThreads(threads).setUseXNNPACK(true))

    override val zeroInput: ByteBuffer = direct(interpreter.getInputTensor(0).numBytes())

    private val output: ByteBuffer = direct(interpreter.getOutputTensor(0).numBytes())

    override fun run(input: ByteBuffer): Double {
        input.rewind()
        output.rewind()
        val start = System.nanoTime()
        interpreter.run(input, output)
        return (System.nanoTime() - start) / 1e6
    }

    override fun output(): ByteBuffer = output.asReadOnlyBuffer().order(ByteOrder.nativeOrder())

    override fun close() = interpreter.close()

}

/** A direct buffer of [bytes] bytes in the platform's byte order. */
internal fun direct(bytes: Int): ByteBuffer = ByteBuffer.allocateDirect(bytes).order(ByteOrder.nativeOrder())
