namespace GpuExecutor.IntegrationTests;

/// <summary>
/// What a job can do to its container, the host and other jobs, end to end on the test bed:
/// whatever it does to itself is a build failure that names the cause, never a system failure
/// that GitLab would blame on the host and retry; and it cannot reach the host's Docker, the
/// executor's config and credentials, or another job's checkpoints and datasets.
/// </summary>
public sealed class ContainmentTests
{
    private static object Job(long jobId, params string[] script) => new { job_id = jobId, image = Testbed.TestImage, script };

    private static void AssertBuildFailureNaming(ExecutorWorkspace.Simulation run, string cause)
    {
        Assert.True(run.Result.Outcome == "failed", run.Log);
        Assert.Contains(cause, run.Log);
        Assert.DoesNotContain("system failure", run.Log);
    }

    [Fact]
    public async Task A_job_that_kills_every_process_in_its_container_is_a_build_failure_naming_it()
    {
        using var workspace = new ExecutorWorkspace();

        var run = await workspace.SimulateAsync(Job(9501, "echo before", "kill -9 -1", "sleep 1", "echo after the kill"));

        AssertBuildFailureNaming(run, "ERROR: the job's script killed the executor's process that ran stage 'build_script' with signal 9");
        Assert.Contains("as `kill -9 -1` does", run.Log);
        // The stage server is PID 1 and survived: the script itself ran on, and cleanup found the container.
        Assert.Contains("after the kill", run.Log);
        Assert.Equal(137, run.Result.ExitCode);
        Assert.Equal("", (await Testbed.JobContainersAsync(9501)).Trim());
    }

    [Fact]
    public async Task A_job_that_stops_its_own_container_is_a_build_failure_and_not_the_hosts()
    {
        using var workspace = new ExecutorWorkspace();

        var run = await workspace.SimulateAsync(Job(9502, "kill -TERM 1; sleep 5"));

        AssertBuildFailureNaming(run, "ERROR: the job's script stopped its own container during stage 'build_script': it sent SIGTERM to the container's main process (PID 1)");
        Assert.Equal("", (await Testbed.JobContainersAsync(9502)).Trim());
    }

    [Fact]
    public async Task An_oom_killed_training_is_a_build_failure_named_out_of_memory_with_the_limit()
    {
        using var workspace = new ExecutorWorkspace(containerConfig: "memory = \"64m\"");

        // tail holds a line whole, and /dev/zero never ends one: it grows until the kernel kills it.
        var run = await workspace.SimulateAsync(Job(9503, "echo training", "head -c 512m /dev/zero | tail > /dev/null", "echo not reached"));

        AssertBuildFailureNaming(run, "ERROR: out of memory: the kernel killed a process of the job");
        Assert.Contains("its container reached its memory limit of 64 MiB (container.memory)", run.Log);
        Assert.DoesNotContain("not reached\n", run.Log.Replace("echo not reached", ""));
    }

    [Fact]
    public async Task A_fork_bomb_is_stopped_by_the_pids_limit_as_a_build_failure_naming_it_and_the_host_is_unharmed()
    {
        using var workspace = new ExecutorWorkspace(containerConfig: "pids_limit = 128");
        var hostTasksBefore = HostTasks();

        // The classic bomb, in the background, then a script that needs processes of its own.
        var run = await workspace.SimulateAsync(Job(9504, "bomb() { bomb | bomb & }; bomb", "sleep 2", "for i in $(seq 200); do sleep 5 & done; wait"));

        AssertBuildFailureNaming(run, "ERROR: the job reached its container's process limit of 128 tasks (container.pids_limit");
        // Cleanup removed the container and every process of the bomb with it.
        Assert.Equal("", (await Testbed.JobContainersAsync(9504)).Trim());
        Assert.True(HostTasks() < hostTasksBefore + 64, $"the host has {HostTasks()} tasks, {hostTasksBefore} before the bomb");
        // The host runs the next job as ever.
        var next = await workspace.SimulateAsync(Job(9505, "echo fine"));
        Assert.True(next.Result.Outcome == "success", next.Log);
    }

    private static int HostTasks() => Directory.GetDirectories("/proc").Count(path => int.TryParse(Path.GetFileName(path), out _));

    [Fact]
    public async Task A_job_container_has_no_new_privileges_the_reviewed_capabilities_a_pids_limit_and_no_docker_socket()
    {
        using var workspace = new ExecutorWorkspace(containerConfig: "pids_limit = 4096");
        const long jobId = 9506;

        var run = await workspace.SimulateAsync(Job(jobId,
            "grep -E '^(NoNewPrivs|CapEff|CapBnd):' /proc/self/status > status.txt",
            "cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max 2>/dev/null > pids.txt || true",
            "find / -xdev -type s 2>/dev/null > sockets.txt; ls /var/run/docker.sock /run/docker.sock 2>/dev/null >> sockets.txt || true",
            "tr '\\0' ' ' < /proc/1/cmdline | head -c 7 > pid1.txt",
            "mount | grep -c ' type ' > mounts.txt"));

        Assert.True(run.Result.Outcome == "success", run.Log);
        var projectDir = workspace.ProjectDirOnHost(jobId);
        var status = File.ReadAllText(Path.Combine(projectDir, "status.txt"));
        Assert.Contains("NoNewPrivs:\t1", status);
        // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID NET_BIND_SERVICE: bits 0 1 3 4 5 6 7 10.
        Assert.Contains("CapEff:\t00000000000004fb", status);
        Assert.Contains("CapBnd:\t00000000000004fb", status);
        Assert.Equal("4096", File.ReadAllText(Path.Combine(projectDir, "pids.txt")).Trim());
        Assert.Equal("", File.ReadAllText(Path.Combine(projectDir, "sockets.txt")).Trim());
        Assert.Equal("bash -c", File.ReadAllText(Path.Combine(projectDir, "pid1.txt")).Trim());
    }

    [Fact]
    public async Task A_job_sees_neither_the_executors_config_and_credentials_nor_another_projects_checkpoints_and_datasets()
    {
        var secretTail = Guid.NewGuid().ToString("N");
        var secret = "containment-secret-" + secretTail;
        // Written split in the script, so the runner's echo of the command does not print it whole.
        var secretPattern = $"\"containment-secret-\"'{secretTail}'";
        var bucket = "contain-" + Guid.NewGuid().ToString("N")[..8];
        using (var client = S3Testbed.Client())
        {
            await S3Testbed.CreateBucketAsync(client, bucket);
            await S3Testbed.PutAsync(client, bucket, "other/data.bin", Text.Utf8.GetBytes("DATASET-OF-PROJECT-B"));
            await S3Testbed.PutAsync(client, bucket, "mine/data.bin", Text.Utf8.GetBytes("dataset of project a"));
        }
        var storeConfig = S3Testbed.StoreConfig("s3", S3Testbed.Endpoint, $"\"{bucket}\"").Replace("not-checked-by-s3rver", secret);
        using var workspace = new ExecutorWorkspace(extraConfig: $"""
            {storeConfig}
            [checkpoints]
            store = "s3"
            bucket = "{bucket}"
            """);
        var configPath = workspace.ConfigPath;

        // Project B trains with a dataset and writes a checkpoint, and stays running while A looks.
        var projectB = workspace.SimulateAsync(new
        {
            job_id = 9507,
            name = "train",
            project_id = 72,
            project_path = "team-b/model",
            image = Testbed.TestImage,
            variables = new Dictionary<string, string> { ["CHECKPOINTS"] = "on", ["DATASETS"] = $"s3://{bucket}/other/ -> /data/other" },
            script = new[] { "echo CHECKPOINT-OF-PROJECT-B > \"$CHECKPOINT_DIR/weights.txt\"; touch \"$CI_PROJECT_DIR/b-ready\"; sleep 12" },
        });
        var readyMarker = Path.Combine(workspace.ProjectDirOnHost(9507, "team-b/model"), "b-ready");
        for (var waited = 0; !File.Exists(readyMarker) && waited < 600; waited++)
            await Task.Delay(100, TestContext.Current.CancellationToken);
        Assert.True(File.Exists(readyMarker), "project B's job never started");

        var projectA = await workspace.SimulateAsync(new
        {
            job_id = 9508,
            name = "train",
            project_id = 71,
            project_path = "team-a/model",
            image = Testbed.TestImage,
            variables = new Dictionary<string, string> { ["CHECKPOINTS"] = "on", ["DATASETS"] = $"s3://{bucket}/mine/ -> /data/mine" },
            script = new[]
            {
                // Every file under every mount point (the host's files can reach a container no
                // other way; the image's own files cannot hold them), and every process's
                // environment. A's own checkpoint is the control: the search does reach into mounts.
                "echo CHECKPOINT-OF-PROJECT-''A > \"$CHECKPOINT_DIR/mine.txt\"",
                $"for top in $(cut -d' ' -f5 /proc/self/mountinfo | sort -u); do case $top in /|/proc*|/sys*|/dev*) ;; *) grep -rls -e CHECKPOINT-OF-PROJECT-A -e CHECKPOINT-OF-PROJECT-B -e DATASET-OF-PROJECT-B -e {secretPattern} \"$top\";; esac; done > found.txt || true",
                $"cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c {secretPattern} > environ.txt || true",
                $"test -e '{configPath}' && echo visible > config.txt || echo hidden > config.txt",
                "cat /data/mine/data.bin > mine.txt",
            },
        });
        var b = await projectB;

        Assert.True(projectA.Result.Outcome == "success", projectA.Log);
        Assert.True(b.Result.Outcome == "success", b.Log);
        var dir = workspace.ProjectDirOnHost(9508, "team-a/model");
        Assert.Equal("/checkpoints/mine.txt", File.ReadAllText(Path.Combine(dir, "found.txt")).Trim());
        Assert.Equal("0", File.ReadAllText(Path.Combine(dir, "environ.txt")).Trim());
        Assert.Equal("hidden", File.ReadAllText(Path.Combine(dir, "config.txt")).Trim());
        Assert.Equal("dataset of project a", File.ReadAllText(Path.Combine(dir, "mine.txt")));
        Assert.DoesNotContain(secret, projectA.Log + b.Log);
    }

    [Fact]
    public void The_secret_search_finds_a_configured_token_in_a_gzipped_step_log_and_a_job_token_in_the_executors_output()
    {
        var root = Directory.CreateTempSubdirectory("gpu-executor-hygiene").FullName;
        try
        {
            var config = Path.Combine(root, "config.toml");
            File.WriteAllText(config, "[continuation]\ntoken = \"glpat-planted-123456\"\n");
            File.WriteAllText(Path.Combine(root, "job-1.json"), "{\"variables\":{\"MLFLOW_TRACKING_TOKEN\":\"mlflow-planted-987654\"}}");
            var stepLog = Path.Combine(Directory.CreateDirectory(Path.Combine(root, "state", "job-logs", "job-1")).FullName, "01-build_script.log.gz");
            using (var gzip = new System.IO.Compression.GZipStream(File.Create(stepLog), System.IO.Compression.CompressionLevel.Fastest))
                gzip.Write("step output glpat-planted-123456\n"u8);

            var error = Assert.ThrowsAny<Exception>(() => SecretHygiene.AssertNoneLeaked(root, config, [("the executor's stderr", "token mlflow-planted-987654")]));

            Assert.Contains("01-build_script.log.gz", error.Message);
            Assert.Contains("in the executor's stderr", error.Message);
            Assert.DoesNotContain("glpat-planted-123456", error.Message);
            File.Delete(stepLog);
            SecretHygiene.AssertNoneLeaked(root, config, [("the executor's stderr", "nothing secret")]);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }
}
