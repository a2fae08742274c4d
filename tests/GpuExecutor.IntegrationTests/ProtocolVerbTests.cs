using System.Text.Json;

namespace GpuExecutor.IntegrationTests;

/// <summary>The protocol verbs called directly, as the runner would, with a hand-made environment.</summary>
public sealed class ProtocolVerbTests
{
    [Fact]
    public async Task Config_prints_only_the_runners_json_on_stdout()
    {
        using var workspace = new ExecutorWorkspace();

        var (exitCode, stdout, _) = await workspace.CallVerbAsync(workspace.RunnerEnvironment(null), "config");

        Assert.Equal(0, exitCode);
        using var json = JsonDocument.Parse(stdout);
        var root = json.RootElement;
        Assert.Equal("/builds", root.GetProperty("builds_dir").GetString());
        Assert.Equal("/cache", root.GetProperty("cache_dir").GetString());
        Assert.False(root.GetProperty("builds_dir_is_shared").GetBoolean());
        Assert.False(string.IsNullOrEmpty(root.GetProperty("hostname").GetString()));
        Assert.Equal("gpu-executor", root.GetProperty("driver").GetProperty("name").GetString());
        Assert.Matches(@"^\d+\.\d+\.\d+", root.GetProperty("driver").GetProperty("version").GetString());
        Assert.Equal("bash", root.GetProperty("shell").GetString());
        Assert.Equal(JsonValueKind.Object, root.GetProperty("job_env").ValueKind);
    }

    [Fact]
    public async Task A_bad_config_is_a_system_failure_whose_message_names_the_key()
    {
        using var workspace = new ExecutorWorkspace();
        File.AppendAllText(workspace.ConfigPath, "\n[tpus]\ncount = 2\n");

        var (exitCode, stdout, stderr) = await workspace.CallVerbAsync(workspace.RunnerEnvironment(null), "config");

        Assert.Equal(2, exitCode);
        Assert.Equal("", stdout);
        Assert.Contains("config key 'tpus'", stderr);
    }

    [Theory]
    [InlineData("prepare")]
    [InlineData("cleanup")]
    public async Task A_missing_job_response_file_is_a_system_failure_that_says_which(string verb)
    {
        using var workspace = new ExecutorWorkspace();

        var unset = await workspace.CallVerbAsync(workspace.RunnerEnvironment(null), verb);
        var absent = await workspace.CallVerbAsync(workspace.RunnerEnvironment(Path.Combine(workspace.Root, "nope.json")), verb);

        Assert.Equal(2, unset.ExitCode);
        Assert.Contains("JOB_RESPONSE_FILE is not set", unset.Stderr);
        Assert.Equal(2, absent.ExitCode);
        Assert.Contains("nope.json' cannot be read", absent.Stderr);
    }

    [Fact]
    public async Task A_malformed_job_response_file_is_a_system_failure_that_says_which()
    {
        using var workspace = new ExecutorWorkspace();
        var malformed = Path.Combine(workspace.Root, "response.json");
        File.WriteAllText(malformed, "{\"id\": 12, \"variables\": [");
        var script = Path.Combine(workspace.Root, "script");
        File.WriteAllText(script, "true\n");

        var run = await workspace.CallVerbAsync(workspace.RunnerEnvironment(malformed), "run", script, "build_script");

        Assert.Equal(2, run.ExitCode);
        Assert.Contains($"JOB_RESPONSE_FILE '{malformed}' is not a valid job payload", run.Stderr);
    }

    [Fact]
    public async Task Prepare_is_safe_to_repeat_and_run_reports_the_real_exit_code_through_the_file()
    {
        using var workspace = new ExecutorWorkspace();
        const long jobId = 7201;
        var environment = workspace.RunnerEnvironment(workspace.WritePayload(jobId));
        try
        {
            Assert.Equal(0, (await workspace.CallVerbAsync(environment, "prepare")).ExitCode);
            Assert.Equal(0, (await workspace.CallVerbAsync(environment, "prepare")).ExitCode);

            var containers = await Testbed.DockerAsync("ps", "--format", "{{.Names}}", "--filter", $"label=io.gpu-executor.job.id={jobId}");
            Assert.Equal(["gpu-executor-7201-helper", "gpu-executor-7201-job"], containers.Split('\n', StringSplitOptions.RemoveEmptyEntries).Order());
            var labels = await Testbed.DockerAsync("inspect", "--format", "{{json .Config.Labels}}", "gpu-executor-7201-job");
            using (var json = JsonDocument.Parse(labels))
            {
                var label = json.RootElement;
                Assert.Equal("true", label.GetProperty("io.gpu-executor.managed").GetString());
                Assert.Equal("3", label.GetProperty("io.gpu-executor.project.id").GetString());
                Assert.Equal("9", label.GetProperty("io.gpu-executor.pipeline.id").GetString());
                Assert.StartsWith("run-", label.GetProperty("io.gpu-executor.run-key").GetString());
                var started = long.Parse(label.GetProperty("io.gpu-executor.started-at").GetString()!);
                Assert.Equal(started + 600, long.Parse(label.GetProperty("io.gpu-executor.deadline").GetString()!));
            }

            var script = Path.Combine(workspace.Root, "script");
            File.WriteAllText(script, "echo to-stdout; echo to-stderr >&2; exit 7\n");
            var run = await workspace.CallVerbAsync(environment, "run", script, "build_script");

            Assert.Equal(1, run.ExitCode);
            Assert.Equal("to-stdout\n", run.Stdout);
            Assert.Equal("to-stderr\n", run.Stderr);
            Assert.Equal("7", File.ReadAllText(workspace.BuildExitCodeFile).Trim());
        }
        finally
        {
            var cleanup = await workspace.CallVerbAsync(environment, "cleanup");
            Assert.Equal(0, cleanup.ExitCode);
        }
        Assert.Equal(0, (await workspace.CallVerbAsync(environment, "cleanup")).ExitCode);
        Assert.Equal("", await Testbed.JobContainersAsync(jobId));
    }

    [Fact]
    public async Task Run_in_a_container_that_is_gone_is_a_system_failure()
    {
        using var workspace = new ExecutorWorkspace();
        var environment = workspace.RunnerEnvironment(workspace.WritePayload(7202));
        var script = Path.Combine(workspace.Root, "script");
        File.WriteAllText(script, "true\n");

        var run = await workspace.CallVerbAsync(environment, "run", script, "build_script");

        Assert.Equal(2, run.ExitCode);
        Assert.Contains("gpu-executor-7202-job", run.Stderr);
        Assert.False(File.Exists(workspace.BuildExitCodeFile));
    }

    [Fact]
    public async Task Run_in_a_stopped_container_is_a_system_failure_and_does_not_hang()
    {
        using var workspace = new ExecutorWorkspace();
        const long jobId = 7203;
        var environment = workspace.RunnerEnvironment(workspace.WritePayload(jobId));
        Assert.Equal(0, (await workspace.CallVerbAsync(environment, "prepare")).ExitCode);
        try
        {
            await Testbed.DockerAsync("kill", "gpu-executor-7203-job");
            var script = Path.Combine(workspace.Root, "script");
            File.WriteAllText(script, "echo never\n");

            var run = await workspace.CallVerbAsync(environment, "run", script, "build_script");

            Assert.Equal(2, run.ExitCode);
            Assert.Contains("container 'gpu-executor-7203-job' is not running", run.Stderr);
            Assert.DoesNotContain("never", run.Stdout);
        }
        finally
        {
            await workspace.CallVerbAsync(environment, "cleanup");
        }
    }

    /// <summary>A stopped container labelled as the executor's, as a job's would be, for gc to judge.</summary>
    /// <param name="deadline">The deadline label, in Unix seconds ("1000": long past).</param>
    private static Task<string> CreateManagedContainerAsync(string name, string deadline, long? jobId = null) =>
        Testbed.DockerAsync(
        [
            "create", "--name", name, "--label", "io.gpu-executor.managed=true", "--label", $"io.gpu-executor.deadline={deadline}",
            .. jobId is { } id ? new[] { "--label", $"io.gpu-executor.job.id={id}" } : [],
            Testbed.TestImage, "true",
        ]);

    [Fact]
    public async Task Gc_keeps_an_adopted_container_until_the_adopting_jobs_deadline()
    {
        using var workspace = new ExecutorWorkspace();
        var suffix = Guid.NewGuid().ToString("N")[..8];
        var followed = $"gc-adopted-{suffix}";
        var abandoned = $"gc-abandoned-{suffix}";
        // Both were labelled for a job whose deadline passed long ago; each was adopted by a
        // later job (re-attach), one still within its own deadline, one long past it.
        foreach (var name in new[] { followed, abandoned })
            await CreateManagedContainerAsync(name, "1000");
        var adopted = Path.Combine(workspace.Root, "state", "adopted");
        Directory.CreateDirectory(adopted);
        var tomorrow = DateTimeOffset.UtcNow.AddDays(1).ToString("O");
        File.WriteAllText(Path.Combine(adopted, "job-9101.json"), $$"""{"job_id":9100,"container":"{{followed}}","stage":"step_script","nonce":"n","deadline":"{{tomorrow}}"}""");
        File.WriteAllText(Path.Combine(adopted, "job-9103.json"), $$"""{"job_id":9102,"container":"{{abandoned}}","stage":"step_script","nonce":"n","deadline":"2001-01-01T00:00:00+00:00"}""");
        try
        {
            var gc = await workspace.CallVerbAsync(new Dictionary<string, string?>(), "gc");

            Assert.Equal(0, gc.ExitCode);
            var remaining = await Testbed.DockerAsync("ps", "-a", "--format", "{{.Names}}");
            Assert.Contains(followed, remaining);
            Assert.DoesNotContain(abandoned, remaining);
            Assert.True(File.Exists(Path.Combine(adopted, "job-9101.json")));
            Assert.False(File.Exists(Path.Combine(adopted, "job-9103.json")));
        }
        finally
        {
            // gc removed one of them already, unless the test failed: remove whatever is left.
            await Testbed.RunAsync("docker", ["--host", Testbed.DockerHost, "rm", "-f", followed, abandoned], null, null);
        }
    }

    [Fact]
    public async Task Gc_keeps_a_container_past_its_deadline_while_a_run_of_its_job_still_holds_the_lease()
    {
        using var workspace = new ExecutorWorkspace();
        var suffix = Guid.NewGuid().ToString("N")[..8];
        var stopping = $"gc-stopping-{suffix}";
        var stateDir = Path.Combine(workspace.Root, "state");
        const long jobId = 9104;
        await CreateManagedContainerAsync(stopping, "1000", jobId);
        try
        {
            // This test process stands for a `run` still in its stop sequence: it holds the lease.
            using (await GpuExecutor.Jobs.RunLease.HoldAsync(stateDir, jobId, TestContext.Current.CancellationToken))
            {
                var whileHeld = await workspace.CallVerbAsync(new Dictionary<string, string?>(), "gc");
                Assert.Equal(0, whileHeld.ExitCode);
                Assert.Contains($"kept container {stopping}: run of job {jobId} is still stopping", whileHeld.Stdout);
                Assert.Contains(stopping, await Testbed.DockerAsync("ps", "-a", "--format", "{{.Names}}"));
            }

            var afterRun = await workspace.CallVerbAsync(new Dictionary<string, string?>(), "gc");
            Assert.Equal(0, afterRun.ExitCode);
            Assert.Contains($"removed container {stopping}", afterRun.Stdout);
        }
        finally
        {
            await Testbed.RunAsync("docker", ["--host", Testbed.DockerHost, "rm", "-f", stopping], null, null);
        }
    }

    [Fact]
    public async Task Gc_with_job_removes_only_that_jobs_expired_container_and_refuses_a_job_id_that_is_not_one()
    {
        using var workspace = new ExecutorWorkspace();
        var suffix = Guid.NewGuid().ToString("N")[..8];
        var named = $"gc-named-{suffix}";
        var other = $"gc-other-{suffix}";
        await CreateManagedContainerAsync(named, "1000", 9105);
        await CreateManagedContainerAsync(other, "1000", 9106);
        try
        {
            var refused = await workspace.CallVerbAsync(new Dictionary<string, string?>(), "gc", "--job", "../9105");
            Assert.NotEqual(0, refused.ExitCode);
            Assert.Contains("gc --job: '../9105' is not a job id", refused.Stderr);

            var gc = await workspace.CallVerbAsync(new Dictionary<string, string?>(), "gc", "--job", "9105");

            Assert.True(gc.ExitCode == 0, gc.Stdout + gc.Stderr);
            Assert.Contains($"removed container {named}", gc.Stdout);
            var remaining = await Testbed.DockerAsync("ps", "-a", "--format", "{{.Names}}");
            Assert.DoesNotContain(named, remaining);
            Assert.Contains(other, remaining);
        }
        finally
        {
            await Testbed.RunAsync("docker", ["--host", Testbed.DockerHost, "rm", "-f", named, other], null, null);
        }
    }

    [Fact]
    public async Task Gc_removes_managed_containers_past_their_deadline_and_keeps_live_ones()
    {
        using var workspace = new ExecutorWorkspace();
        var suffix = Guid.NewGuid().ToString("N")[..8];
        var expired = $"gc-expired-{suffix}";
        var live = $"gc-live-{suffix}";
        var farFuture = DateTimeOffset.UtcNow.AddDays(1).ToUnixTimeSeconds().ToString();
        await CreateManagedContainerAsync(expired, "1000");
        await CreateManagedContainerAsync(live, farFuture);
        try
        {
            var gc = await workspace.CallVerbAsync(new Dictionary<string, string?>(), "gc");

            Assert.Equal(0, gc.ExitCode);
            Assert.Contains($"removed container {expired}", gc.Stdout);
            var remaining = await Testbed.DockerAsync("ps", "-a", "--format", "{{.Names}}");
            Assert.DoesNotContain(expired, remaining);
            Assert.Contains(live, remaining);
        }
        finally
        {
            await Testbed.DockerAsync("rm", "-f", live);
        }
    }
}
