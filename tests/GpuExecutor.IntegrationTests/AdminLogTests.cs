using GpuExecutor.AdminLog;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// The admin log (state_dir/log/events.jsonl) of simulated jobs on the real daemon: one line per
/// verb call the runner made, in order, with the job, the stage and the outcome; the failed
/// prepares of a job whose daemon is down each leave theirs; no configured secret is in it.
/// </summary>
public sealed class AdminLogTests
{
    private const string StoreSecret = "store-secret-key-8c1f0e";
    private const string ContinuationToken = "glpat-admin-log-4410";
    private const string MaskedValue = "masked-gpu-count-51d7";

    private static IReadOnlyList<AdminEvent> Events(ExecutorWorkspace workspace) =>
        EventLog.ReadAll(Path.Combine(workspace.Root, "state")).ToList();

    [Fact]
    public async Task A_job_leaves_one_line_per_verb_call_with_its_stage_and_outcome_and_events_reads_them_back()
    {
        using var workspace = new ExecutorWorkspace();
        var simulation = await workspace.SimulateAsync(new { job_id = 8801, script = new[] { "echo hello", "exit 3" } });
        Assert.Equal("failed", simulation.Result.Outcome);

        var events = Events(workspace).Where(record => record.Job == 8801).ToList();
        // The simulator records every call it made; config has no job of its own until prepare.
        var calls = simulation.Result.Calls.Where(call => call.Name != "config").ToList();
        Assert.Equal(calls.Select(call => call.Name), events.Where(record => record.Verb != "config").Select(record => record.Stage ?? record.Verb));
        Assert.Single(events, record => record.Verb == "config");
        Assert.All(events.Where(record => record.Verb != "config"), record => Assert.Equal(1, record.Project));
        var build = Assert.Single(events, record => record.Stage == "build_script");
        Assert.Equal(("build_failure", 3), (build.Outcome, build.ScriptExitCode));
        Assert.All(events.Where(record => record.Stage != "build_script"), record => Assert.Equal("success", record.Outcome));
        Assert.All(events, record => Assert.True(record.DurationMs >= 0 && record.Version.Length > 0 && record.Host.Length > 0, record.ToString()));

        var (exitCode, stdout, stderr) = await workspace.CallVerbAsync(new Dictionary<string, string?>(), "events", "--job", "8801", "--since", "1h");
        Assert.True(exitCode == 0, stderr);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(events.Count, lines.Length);
        Assert.Contains(lines, line => line.Contains("run build_script", StringComparison.Ordinal) && line.Contains("build_failure", StringComparison.Ordinal) && line.Contains("script exit 3", StringComparison.Ordinal));
        var (_, none, _) = await workspace.CallVerbAsync(new Dictionary<string, string?>(), "events", "--job", "8802");
        Assert.Equal("", none);
    }

    [Fact]
    public async Task A_job_whose_daemon_is_down_leaves_its_three_failed_prepares_and_no_configured_or_masked_secret()
    {
        // No dockerd listens here, as after the daemon died; the runner tries prepare three times.
        using var workspace = new ExecutorWorkspace(dockerEndpoint: $"unix://{Path.GetTempPath()}gpu-executor-down-{Guid.NewGuid():N}.sock", extraConfig: $"""
            [continuation]
            gitlab_url = "http://127.0.0.1:9"
            token = "{ContinuationToken}"
            [stores.s3]
            type = "s3"
            endpoint = "{S3Testbed.Endpoint}"
            path_style = true
            access_key_id = "S3RVER"
            secret_access_key = "{StoreSecret}"
            allow = ["datasets"]
            """);
        var simulation = await workspace.SimulateAsync(new { job_id = 8811, script = new[] { "true" } });
        Assert.Equal("system_failure", simulation.Result.Outcome);
        Assert.Equal(3, simulation.Result.PrepareAttempts);

        var events = Events(workspace).Where(record => record.Job == 8811).ToList();
        var prepares = events.Where(record => record.Verb == "prepare").ToList();
        Assert.Equal(3, prepares.Count);
        Assert.All(prepares, record => Assert.Equal(("system_failure", 2), (record.Outcome, record.ExitCode)));
        Assert.All(prepares, record => Assert.False(string.IsNullOrEmpty(record.Message)));
        Assert.Equal(simulation.Result.Calls.Count(call => call.Name != "config"), events.Count(record => record.Verb != "config"));

        // A masked CI/CD variable that the failure message quotes (the job's own mistake, so
        // prepare refuses it at once, before the daemon is asked).
        var refused = await workspace.SimulateAsync(new { job_id = 8812, variables = new Dictionary<string, string> { ["GPU_COUNT"] = MaskedValue }, masked = new[] { "GPU_COUNT" }, script = new[] { "true" } });
        Assert.Equal("failed", refused.Result.Outcome);
        var refusal = Assert.Single(Events(workspace), record => record.Job == 8812 && record.Verb == "prepare");
        Assert.Equal(("build_failure", null), (refusal.Outcome, refusal.ScriptExitCode));
        Assert.Contains($"GPU_COUNT '{SecretRedaction.Mask}'", refusal.Message);

        var log = File.ReadAllText(EventLog.PathOf(Path.Combine(workspace.Root, "state")));
        foreach (var secret in new[] { StoreSecret, ContinuationToken, MaskedValue })
            Assert.DoesNotContain(secret, log);
    }
}
