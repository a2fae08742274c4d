using System.Text.RegularExpressions;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// The example image (scripts/build-example-image.sh, Debian's python3-torch), built once for the
/// test bed's daemon, and the digits dataset exported from it into s3rver.
/// </summary>
public sealed class PyTorchExample : IAsyncLifetime
{
    public string Image { get; private set; } = "";
    public string Bucket { get; } = "digits-" + Guid.NewGuid().ToString("N")[..8];

    public async ValueTask InitializeAsync()
    {
        Testbed.Require();
        var (exitCode, stdout, stderr) = await Testbed.RunAsync(
            Path.Combine(Testbed.RepositoryRoot, "scripts", "build-example-image.sh"), [],
            new Dictionary<string, string?> { ["DOCKER_HOST"] = Testbed.DockerHost }, Testbed.RepositoryRoot, TimeSpan.FromMinutes(30));
        Assert.True(exitCode == 0, $"build-example-image.sh failed: {stdout}{stderr}");
        Image = stdout.Trim().Split('\n')[^1];

        // The digits as the package ships them, exported by the example's own script in the image.
        var exportDir = Directory.CreateTempSubdirectory("gpu-executor-digits").FullName;
        try
        {
            var export = await Testbed.RunAsync("docker", ["--host", Testbed.DockerHost, "run", "--rm",
                "-v", $"{Path.Combine(Testbed.RepositoryRoot, "examples", "pytorch")}:/example:ro", "-v", $"{exportDir}:/out",
                Image, "python3", "/example/export_digits.py", "/out/digits.npz"], null, null, TimeSpan.FromMinutes(5));
            Assert.True(export.ExitCode == 0, $"export_digits.py failed: {export.Stdout}{export.Stderr}");
            using var s3 = S3Testbed.Client();
            await S3Testbed.CreateBucketAsync(s3, Bucket);
            await S3Testbed.PutAsync(s3, Bucket, "digits/digits.npz", await File.ReadAllBytesAsync(Path.Combine(exportDir, "digits.npz")));
        }
        finally
        {
            // Written by root in the container: removed the same way.
            await Testbed.RunAsync("rm", ["-rf", exportDir], null, null);
        }
    }

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}

/// <summary>
/// The reference PyTorch trainer (examples/pytorch/train.py) through the executor: a run cut off
/// by a cancel, by its runner's death, or by its deadline, and resumed, ends with the same weights,
/// bit for bit, as the run that was never interrupted.
/// </summary>
public sealed partial class PyTorchTrainerTests(PyTorchExample example) : IClassFixture<PyTorchExample>
{
    private const int Epochs = 3;
    private const double MinimumAccuracy = 0.9;
    private const string Token = "glpat-pytorch-continuation-3310";

    /// <param name="mlflow">Tracks runs in this fake of GitLab's MLflow API; the job containers then share the host's network to reach it.</param>
    /// <param name="hostNetwork">The job containers share the host's network, to reach a fake server on its loopback.</param>
    private ExecutorWorkspace Workspace(GpuExecutor.Tests.FakeGitLab gitLab, GpuExecutor.Tests.FakeMlflow? mlflow = null, bool hostNetwork = false)
    {
        var tracking = mlflow is null ? "" : $"""
            [mlflow]
            tracking = "gitlab"
            gitlab_url = "{mlflow.Url}"
            """;
        var workspace = new ExecutorWorkspace(stopGraceSeconds: 20, allowed: "\"gpu-executor-test/*\", \"gpu-executor-examples/*\"", containerNetwork: mlflow is not null || hostNetwork ? "host" : null, extraConfig: $"""
            {S3Testbed.StoreConfig("s3", S3Testbed.Endpoint, $"\"{example.Bucket}\"")}
            [checkpoints]
            deadline_margin_seconds = 25
            final_commit_wait_seconds = 30
            [continuation]
            gitlab_url = "{gitLab.Url}"
            token = "{Token}"
            max_segments = 3
            {tracking}
            """);
        var sources = Directory.CreateDirectory(Path.Combine(workspace.Root, "pytorch")).FullName;
        File.Copy(Path.Combine(Testbed.RepositoryRoot, "examples", "pytorch", "train.py"), Path.Combine(sources, "train.py"));
        return workspace;
    }

    /// <param name="batchSleep">Slows each batch down, so that an interruption lands mid-epoch.</param>
    private object Job(long jobId, string run, double batchSleep, int timeoutSeconds = 900, string? mlflowToken = null)
    {
        var variables = new Dictionary<string, string>
        {
            ["DATASETS"] = $"s3://{example.Bucket}/digits/ -> /data/digits",
            ["CHECKPOINTS"] = "on",
            ["CHECKPOINT_RUN_KEY"] = run,
            ["EPOCHS"] = Epochs.ToString(),
            ["CHECKPOINT_EVERY_SECONDS"] = "2",
            ["BATCH_SLEEP_SECONDS"] = batchSleep.ToString(System.Globalization.CultureInfo.InvariantCulture),
        };
        if (mlflowToken is not null)
            variables["MLFLOW_TRACKING_TOKEN"] = mlflowToken;
        return new { job_id = jobId, name = "train", image = example.Image, sources = "pytorch", variables, script = new[] { "python3 train.py" }, timeout = timeoutSeconds };
    }

    [GeneratedRegex(@"training complete: accuracy (\d\.\d+), state_dict sha256 ([0-9a-f]{64})")]
    private static partial Regex CompleteLine();

    [GeneratedRegex(@"resumed at epoch (\d+) batch (\d+)")]
    private static partial Regex ResumedLine();

    private static (double Accuracy, string Sha256) Result(string log)
    {
        var match = CompleteLine().Match(log);
        Assert.True(match.Success, $"the training did not complete:\n{log}");
        return (double.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture), match.Groups[2].Value);
    }

    private static void AssertResumedMidEpoch(string log)
    {
        var resumed = ResumedLine().Match(log);
        Assert.True(resumed.Success, $"the retry did not resume:\n{log}");
        Assert.True(int.Parse(resumed.Groups[1].Value) < Epochs, log);
    }

    [Fact]
    public async Task A_run_cancelled_killed_or_cut_by_its_deadline_and_resumed_ends_with_the_weights_of_the_uninterrupted_run()
    {
        using var gitLab = new GpuExecutor.Tests.FakeGitLab(Token) { NextJobId = 9632 };
        using var workspace = Workspace(gitLab);
        var output = TestContext.Current.TestOutputHelper!;

        // Never interrupted.
        var straight = await workspace.SimulateAsync(Job(9601, "straight", batchSleep: 0));
        Assert.True(straight.Result.Outcome == "success", straight.Log);
        var (accuracy, expected) = Result(straight.Log);
        output.WriteLine($"uninterrupted: accuracy {accuracy:0.0000}, sha256 {expected}");
        Assert.True(accuracy >= MinimumAccuracy, $"accuracy {accuracy} below {MinimumAccuracy}");

        // Cancelled mid-epoch: the signal's save at the batch boundary, and the next job resumes it.
        var cancelled = await workspace.SimulateAsync(Job(9611, "cancelled", batchSleep: 0.1), "--cancel-after", "8");
        Assert.True(cancelled.Result.Outcome == "canceled", cancelled.Log);
        Assert.Contains("stopped: checkpoint saved at step", cancelled.Log);
        var afterCancel = await workspace.SimulateAsync(Job(9612, "cancelled", batchSleep: 0));
        Assert.True(afterCancel.Result.Outcome == "success", afterCancel.Log);
        AssertResumedMidEpoch(afterCancel.Log);
        Assert.Equal(expected, Result(afterCancel.Log).Sha256);

        // The runner dies; its retry adopts the training still running in the container.
        await ReferenceTrainer.RunUntilTheRunnerDiesAsync(workspace, Job(9621, "reattached", batchSleep: 0.02), atStep: 40);
        var adopter = await workspace.SimulateAsync(Job(9622, "reattached", batchSleep: 0.02));
        Assert.True(adopter.Result.Outcome == "success", adopter.Log);
        Assert.Contains("This job adopts it", adopter.Log);
        Assert.Equal(expected, Result(adopter.Log).Sha256);

        // The deadline: its signal's save, the retry through the GitLab API, and the next segment resumes.
        gitLab.AddJob(1, 9631, "train", "running");
        var cut = await workspace.SimulateAsync(Job(9631, "deadline", batchSleep: 0.2, timeoutSeconds: 45), "--graceful-kill-timeout", "60");
        Assert.True(cut.Result.Outcome == "failed", cut.Log);
        Assert.Contains("retries it through the GitLab API as segment 2", cut.Log);
        gitLab.SetStatus(9631, "failed");
        await gitLab.WaitForRetryAsync(9631, TimeSpan.FromSeconds(60), TestContext.Current.CancellationToken);
        Assert.Equal([(9631L, 9632L)], gitLab.Retries);
        var continued = await workspace.SimulateAsync(Job(9632, "deadline", batchSleep: 0));
        Assert.True(continued.Result.Outcome == "success", continued.Log);
        AssertResumedMidEpoch(continued.Log);
        Assert.Equal(expected, Result(continued.Log).Sha256);
    }

    [Fact]
    public async Task A_run_tracked_in_GitLab_s_MLflow_logs_every_segment_and_the_retry_to_one_run_in_step_order()
    {
        const string mlflowToken = "glpat-mlflow-e2e-7741";
        using var gitLab = new GpuExecutor.Tests.FakeGitLab(Token) { NextJobId = 9662 };
        using var mlflow = new GpuExecutor.Tests.FakeMlflow(mlflowToken);
        using var workspace = Workspace(gitLab, mlflow);

        // Segment 1 reaches its deadline and is continued as segment 2 through the GitLab API;
        // segment 2 is cancelled; its retry runs the training to its end.
        gitLab.AddJob(1, 9661, "train", "running");
        var first = await workspace.SimulateAsync(Job(9661, "tracked", batchSleep: 0.2, timeoutSeconds: 45, mlflowToken: mlflowToken), "--graceful-kill-timeout", "60");
        Assert.True(first.Result.Outcome == "failed", first.Log);
        gitLab.SetStatus(9661, "failed");
        await gitLab.WaitForRetryAsync(9661, TimeSpan.FromSeconds(60), TestContext.Current.CancellationToken);
        Assert.Equal([(9661L, 9662L)], gitLab.Retries);
        var second = await workspace.SimulateAsync(Job(9662, "tracked", batchSleep: 0.1, mlflowToken: mlflowToken), "--cancel-after", "6");
        Assert.True(second.Result.Outcome == "canceled", second.Log);
        var retry = await workspace.SimulateAsync(Job(9663, "tracked", batchSleep: 0, mlflowToken: mlflowToken));
        Assert.True(retry.Result.Outcome == "success", retry.Log);

        // One MLflow run for the training run, tagged with each of its jobs.
        var run = Assert.Single(mlflow.Runs);
        Assert.Equal("p1-tracked", run.Name);
        foreach (var jobId in new[] { 9661, 9662, 9663 })
            Assert.True(run.Tags.ContainsKey($"gpu_executor.job.{jobId}"), string.Join(", ", run.Tags.Keys));
        Assert.Contains($"MLFLOW_TRACKING_URI={mlflow.Url}/api/v4/projects/1/ml/mlflow", first.Log);
        Assert.Equal("FINISHED", run.Status);
        // Every metric arrived in step order, across the segments and the retry, up to the last step.
        foreach (var key in new[] { "loss", "learning_rate", "accuracy" })
        {
            var steps = run.Metrics.Where(metric => metric.Key == key).Select(metric => metric.Step).ToList();
            Assert.True(steps.Count > 0, $"no {key} metric");
            Assert.True(steps.Zip(steps.Skip(1)).All(pair => pair.Second > pair.First), $"{key} steps out of order: {string.Join(", ", steps)}");
        }
        var lastStep = run.Metrics.Where(metric => metric.Key == "loss").Max(metric => metric.Step);
        Assert.Equal(Epochs * 45, lastStep);
        Assert.Equal(Epochs, run.Metrics.Count(metric => metric.Key == "accuracy"));
        Assert.Equal(0, mlflow.UnauthorizedRequests);
        // The job's token reached the API, and no log.
        foreach (var log in new[] { first.Log, second.Log, retry.Log })
            Assert.DoesNotContain(mlflowToken, log);
    }

    [Fact]
    public async Task The_example_MLOps_pipeline_runs_through_the_simulator_with_artifacts_carried_and_GitLab_only_jobs_listed_as_skipped()
    {
        using var gitLab = new GpuExecutor.Tests.FakeGitLab(Token);
        using var workspace = Workspace(gitLab);
        // The repository as the jobs see it: the example's Python files.
        var sources = Directory.CreateDirectory(Path.Combine(workspace.Root, "repository", "examples", "pytorch")).FullName;
        foreach (var file in Directory.GetFiles(Path.Combine(Testbed.RepositoryRoot, "examples", "pytorch"), "*.py"))
            File.Copy(file, Path.Combine(sources, Path.GetFileName(file)));
        var resultPath = Path.Combine(workspace.Root, "pipeline.json");

        var (exitCode, stdout, stderr) = await Testbed.RunAsync(Testbed.Binary,
        [
            "--config", workspace.ConfigPath, "simulate-pipeline", Path.Combine(Testbed.RepositoryRoot, "examples", "mlops", ".gitlab-ci.yml"),
            "--repository", Testbed.RepositoryRoot, "--sources", Path.Combine(workspace.Root, "repository"),
            // This test bed has no GPU; the dataset is the fixture's bucket in s3rver.
            "--variable", "GPU_COUNT=0", "--variable", $"DATASETS=s3://{example.Bucket}/digits/ -> /data/digits", "--variable", "EPOCHS=3",
            "--result", resultPath,
        ], null, workspace.Root, TimeSpan.FromMinutes(10));
        var log = stdout + stderr;

        Assert.True(exitCode == 0, log);
        var results = System.Text.Json.JsonDocument.Parse(await File.ReadAllTextAsync(resultPath, TestContext.Current.CancellationToken)).RootElement.EnumerateArray()
            .ToDictionary(job => job.GetProperty("name").GetString()!, job => (Outcome: job.GetProperty("outcome").GetString()!, Reason: job.TryGetProperty("reason", out var reason) ? reason.GetString() : null, JobId: job.TryGetProperty("job_id", out var id) ? id.GetInt64() : 0));
        foreach (var ran in new[] { "train", "evaluate", "batch-inference" })
            Assert.True(results[ran].Outcome == "success", $"{ran}: {results[ran].Outcome}\n{log}");
        foreach (var gitLabOnly in new[] { "register-model", "package-serving-image", "deploy", "serving-check" })
            Assert.Equal("skipped", results[gitLabOnly].Outcome);
        Assert.Contains("needs a runner tagged docker", results["package-serving-image"].Reason);
        Assert.Contains("needs a runner tagged serving", results["deploy"].Reason);
        Assert.Contains("manual", results["cleanup"].Reason);
        Assert.Contains("CI_PIPELINE_SOURCE=push", results["retrain-trigger"].Reason);
        Assert.Equal("skipped", results["retrain-trigger"].Outcome);
        // The evaluation read the training's metrics from its artifacts, and batch inference its model.
        Assert.Matches(@"accuracy = 0\.9\d+ \(threshold 0\.9\)", log);
        var inference = workspace.ProjectDirOnHost(results["batch-inference"].JobId);
        var predictions = System.Text.Json.JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(inference, "predictions", "predictions.json"), TestContext.Current.CancellationToken)).RootElement;
        Assert.Equal(1797, predictions.GetProperty("count").GetInt32());
        Assert.True(predictions.GetProperty("accuracy").GetDouble() > MinimumAccuracy, predictions.ToString());
    }

    [Fact]
    public async Task The_scheduled_drift_check_triggers_the_training_pipeline_when_the_new_data_drifted_and_only_then()
    {
        const string triggerToken = "glptt-drift-check-5512";
        using var gitLab = new GpuExecutor.Tests.FakeGitLab(Token) { TriggerToken = triggerToken };
        using var workspace = Workspace(gitLab, hostNetwork: true);
        // New data: the same digits, and the digits inverted (16 - each pixel), a drift no model survives.
        var exportDir = Directory.CreateTempSubdirectory("gpu-executor-drift").FullName;
        var (exitCode, stdout, stderr) = await Testbed.RunAsync("docker", ["--host", Testbed.DockerHost, "run", "--rm",
            "-v", $"{Path.Combine(Testbed.RepositoryRoot, "examples", "pytorch")}:/example:ro", "-v", $"{exportDir}:/out", example.Image, "python3", "-c",
            "import numpy as np, runpy, sys; sys.argv = ['x', '/out/same.npz']; runpy.run_path('/example/export_digits.py'); d = dict(np.load('/out/same.npz')); d['images'] = 16 - d['images']; np.savez('/out/drifted.npz', **d)"],
            null, null, TimeSpan.FromMinutes(2));
        Assert.True(exitCode == 0, stdout + stderr);
        using (var s3 = S3Testbed.Client())
        {
            await S3Testbed.PutAsync(s3, example.Bucket, "same/digits.npz", await File.ReadAllBytesAsync(Path.Combine(exportDir, "same.npz"), TestContext.Current.CancellationToken));
            await S3Testbed.PutAsync(s3, example.Bucket, "drifted/digits.npz", await File.ReadAllBytesAsync(Path.Combine(exportDir, "drifted.npz"), TestContext.Current.CancellationToken));
        }
        await Testbed.RunAsync("rm", ["-rf", exportDir], null, null);
        // A project whose pipeline holds the drift check alone, as a schedule would run it.
        var repository = Directory.CreateDirectory(Path.Combine(workspace.Root, "drift-project", "templates")).Parent!.FullName;
        File.Copy(Path.Combine(Testbed.RepositoryRoot, "templates", "retrain-trigger.yml"), Path.Combine(repository, "templates", "retrain-trigger.yml"));

        async Task<string> CheckAsync(string current, long firstJobId)
        {
            var pipeline = Path.Combine(repository, $"{current}.yml");
            await File.WriteAllTextAsync(pipeline, $"""
                stages: [drift]
                include:
                  - local: templates/retrain-trigger.yml
                    inputs:
                      datasets: |
                        s3://{example.Bucket}/digits/ -> /data/reference
                        s3://{example.Bucket}/{current}/ -> /data/current
                      reference_file: /data/reference/digits.npz
                      current_file: /data/current/digits.npz
                      ref: main
                """, TestContext.Current.CancellationToken);
            var run = await Testbed.RunAsync(Testbed.Binary,
            [
                "--config", workspace.ConfigPath, "simulate-pipeline", pipeline, "--repository", repository, "--source", "schedule",
                "--first-job-id", firstJobId.ToString(System.Globalization.CultureInfo.InvariantCulture),
                // The simulated GitLab's API is the fake's; the trigger token is the project's masked variable.
                "--variable", $"CI_API_V4_URL={gitLab.Url}/api/v4", "--variable", $"RETRAIN_TRIGGER_TOKEN={triggerToken}",
            ], null, workspace.Root, TimeSpan.FromMinutes(5));
            Assert.True(run.ExitCode == 0, run.Stdout + run.Stderr);
            return run.Stdout + run.Stderr;
        }

        var stable = await CheckAsync("same", 9700);
        Assert.Contains("population stability index 0.0000", stable);
        Assert.Contains("nothing to retrain", stable);
        Assert.Empty(gitLab.Triggers);

        var drifted = await CheckAsync("drifted", 9710);
        Assert.Contains("drift past the threshold: triggered the training pipeline on main (201)", drifted);
        var trigger = Assert.Single(gitLab.Triggers);
        Assert.Equal("main", trigger["ref"]);
        Assert.Equal("drift", trigger["variables[RETRAIN_REASON]"]);
        Assert.True(double.Parse(trigger["variables[RETRAIN_PSI]"], System.Globalization.CultureInfo.InvariantCulture) > 0.25, trigger["variables[RETRAIN_PSI]"]);
    }
}
