package dev.edgecomp.demo

import java.io.File
import java.nio.ByteBuffer
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/**
 * ExecuTorch's runtime (org.pytorch:executorch-android) running a bundle's .pte: XNNPACK takes the delegated
 * part of the graph, the rest runs on ExecuTorch's portable kernels (edgecomp's report says which ops).
 *
 * The input and output shapes come from the manifest's entry for the file (float32 I/O, as edgecomp exports
 * both the fp32 and the int8 programs). ExecuTorch loads programs from a path, so the bytes are written to a
 * private temporary file first. Its Java API sizes its own thread pool (the cores), so `threads` is not applied.
 */
class ExecuTorchEngine(model: ByteBuffer, file: FileEntry) : Engine {
    private val inputShape: LongArray
    private val outputInfo: TensorInfo
    private val program: File
    private val module: Module

    init {
        val input = file.inputs.firstOrNull() ?: throw ManifestException("${file.path} lists no input")
        outputInfo = file.outputs.firstOrNull() ?: throw ManifestException("${file.path} lists no output")
        if (input.dtype != DType.FLOAT32 || outputInfo.dtype != DType.FLOAT32) {
            throw ManifestException("${file.path}: this app runs .pte programs with float32 inputs and outputs")
        }
        inputShape = input.shape.map { it.toLong() }.toLongArray()
        program = File.createTempFile("edgecomp", ".pte")
        val bytes = ByteArray(model.remaining()).also { model.duplicate().get(it) }
        program.writeBytes(bytes)
        module = Module.load(program.path)
    }

    override val zeroInput: ByteBuffer = direct(4 * elementCount(inputShape.map { it.toInt() }))

    private val output: ByteBuffer = direct(4 * elementCount(outputInfo.shape))

    override fun run(input: ByteBuffer): Double {
        input.rewind()
        val values = FloatArray(input.remaining() / 4).also { input.order(zeroInput.order()).asFloatBuffer().get(it) }
        val start = System.nanoTime()
        val result = module.forward(EValue.from(Tensor.fromBlob(values, inputShape)))[0].toTensor().dataAsFloatArray
        val ms = (System.nanoTime() - start) / 1e6
        output.rewind()
        output.asFloatBuffer().put(result, 0, minOf(result.size, output.capacity() / 4))
        return ms
    }

    override fun output(): ByteBuffer = output.asReadOnlyBuffer().order(output.order())

    override fun close() {
        module.destroy()
        program.delete()
    }
}
