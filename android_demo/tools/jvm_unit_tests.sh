#!/bin/sh
# Compile the app's pure-Kotlin sources (no Android API) with a plain kotlinc and run their JUnit 4
# tests: the check that runs where no Android SDK is installed. With the SDK, `./gradlew test` runs
# the same tests. Jars default to the Debian packages kotlin, libandroid-json-java (Android's own
# org.json) and junit4; override with ORG_JSON_JAR, JUNIT_JAR, HAMCREST_JAR.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
app="$here/app/src"
json=${ORG_JSON_JAR:-/usr/share/java/com.android.json.jar}
junit=${JUNIT_JAR:-/usr/share/java/junit4.jar}
hamcrest=${HAMCREST_JAR:-/usr/share/java/hamcrest-core.jar}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
main="$app/main/java/dev/edgecomp/demo"
# The sources that use no Android API; the activities and the LiteRT wrapper need the SDK.
kotlinc -nowarn -include-runtime -cp "$json:$junit" -d "$out/tests.jar" \
    "$main/Manifest.kt" "$main/Preprocessor.kt" "$main/Scores.kt" "$main/BenchmarkReport.kt" \
    "$app"/test/java/dev/edgecomp/demo/*.kt
java -cp "$out/tests.jar:$app/test/resources:$json:$junit:$hamcrest" org.junit.runner.JUnitCore \
    dev.edgecomp.demo.ManifestTest dev.edgecomp.demo.PreprocessorTest dev.edgecomp.demo.ScoresTest
