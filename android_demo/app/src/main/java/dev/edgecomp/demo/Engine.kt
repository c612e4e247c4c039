package dev.edgecomp.demo

import java.io.Closeable
import java.nio.ByteBuffer
import java.nio.ByteOrder
import org.tensorflow.lite.Interpreter

/** The logcat tag of the app: `adb logcat -s edgecomp`. */
const val TAG = "edgecomp"

/** LiteRT's interpreter on the CPU with XNNPACK, with buffers for one input and one output. */
class Engine(model: ByteBuffer, threads: Int) : Closeable {
    private val interpreter = Interpreter(model, Interpreter.Options().setNumThreads(threads).setUseXNNPACK(true))

    /** A zero-filled input of the model's size: what the benchmark feeds. */
    val zeroInput: ByteBuffer = direct(interpreter.getInputTensor(0).numBytes())

    private val output: ByteBuffer = direct(interpreter.getOutputTensor(0).numBytes())

    /** Runs one inference on [input] (the bytes of the model's first input); returns its wall time in ms. */
    fun run(input: ByteBuffer = zeroInput): Double {
        input.rewind()
        output.rewind()
        val start = System.nanoTime()
        interpreter.run(input, output)
        return (System.nanoTime() - start) / 1e6
    }

    /** The first output of the last run (a read-only view). */
    fun output(): ByteBuffer = output.asReadOnlyBuffer().order(ByteOrder.nativeOrder())

    override fun close() = interpreter.close()

    private fun direct(bytes: Int): ByteBuffer = ByteBuffer.allocateDirect(bytes).order(ByteOrder.nativeOrder())
}
