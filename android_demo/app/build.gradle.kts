plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "dev.edgecomp.demo"
    compileSdk = 34

    defaultConfig {
        applicationId = "dev.edgecomp.demo"
        minSdk = 24
        targetSdk = 34
        versionCode = 1
        versionName = "0.1.0"
    }

    buildTypes {
        release {
            isMinifyEnabled = false
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    kotlinOptions {
        jvmTarget = "17"
    }
}

dependencies {
    // LiteRT (formerly TensorFlow Lite): org.tensorflow.lite.Interpreter, XNNPACK on the CPU.
    implementation("com.google.ai.edge.litert:litert:1.4.1")
    // ExecuTorch (org.pytorch.executorch.Module): runs a bundle's .pte with the XNNPACK delegate.
    implementation("org.pytorch:executorch-android:1.0.1")
    testImplementation("junit:junit:4.13.2")
    // Android's org.json is a stub in JVM unit tests; the real implementation stands in for it.
    testImplementation("org.json:json:20240303")
}

// `./gradlew assembleDebug -Pbundle=/path/to/bundle` packs that bundle's edgecomp.json, .tflite and .pte files
// into the APK's assets/bundle/, so the app runs it without `edgecomp deploy`.
providers.gradleProperty("bundle").orNull?.let { bundle ->
    val generated = layout.buildDirectory.dir("generated/bundleAssets")
    val copyBundle = tasks.register<Sync>("copyBundle") {
        from(bundle) { include("edgecomp.json", "*.tflite", "*.pte") }
        into(generated.map { it.dir("bundle") })
    }
    android.sourceSets.getByName("main").assets.srcDir(generated)
    tasks.named("preBuild") { dependsOn(copyBundle) }
}
