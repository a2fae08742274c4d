namespace GpuExecutor.IntegrationTests;

/// <summary>
/// The abuse cases of issue 18, end to end on the test bed: each is refused with a clear build
/// failure or passes through inertly, and leaves nothing behind on the host.
/// </summary>
public sealed class AbuseTests
{
    [Fact]
    public async Task Run_keys_and_dataset_lines_with_dot_dot_nul_or_ten_thousand_characters_are_build_failures_naming_the_variable()
    {
        var bucket = "abuse-" + Guid.NewGuid().ToString("N")[..8];
        using var workspace = new ExecutorWorkspace(extraConfig: S3Testbed.StoreConfig("s3", S3Testbed.Endpoint, $"\"{bucket}\""));
        var longText = new string('a', 10_000);
        var cases = new (string Variable, string Value, string Said)[]
        {
            ("CHECKPOINT_RUN_KEY", "../other-project", "CHECKPOINT_RUN_KEY='../other-project' is not a run name"),
            ("CHECKPOINT_RUN_KEY", "run\0key", "CHECKPOINT_RUN_KEY='run?key' is not a run name"),
            ("CHECKPOINT_RUN_KEY", longText, "CHECKPOINT_RUN_KEY='" + new string('a', 80) + "…' is not a run name"),
            ("DATASETS", $"s3://{bucket}/../x/ -> /data/x", "DATASETS line 1: source key"),
            ("DATASETS", $"s3://{bucket}/x/ -> /data/../../etc", "DATASETS line 1: container path"),
            ("DATASETS", $"s3://{bucket}/x\0y/ -> /data/x", "has an empty, '.' or '..' segment, or a control character"),
            ("DATASETS", $"s3://{bucket}/{longText}/ -> /data/x", "DATASETS line 1: source key 'aaaa"),
        };
        var jobId = 9601L;
        foreach (var (variable, value, said) in cases)
        {
            var variables = new Dictionary<string, string> { ["CHECKPOINTS"] = "on", [variable] = value };
            var run = await workspace.SimulateAsync(new { job_id = jobId, image = Testbed.TestImage, variables, script = new[] { "echo must not run" } });

            Assert.True(run.Result.Outcome == "failed", $"{variable}={value[..Math.Min(40, value.Length)]}: {run.Log}");
            Assert.True(run.Log.Contains(said, StringComparison.Ordinal), $"not said: {said}\n{run.Log}");
            Assert.DoesNotContain("\0", run.Log);
            Assert.DoesNotContain(longText, run.Log);
            Assert.DoesNotContain("$ echo must not run", run.Log);
            Assert.Equal("", (await Testbed.JobContainersAsync(jobId)).Trim());
            jobId++;
        }
        // Nothing was made outside the executor's directories, nor beside them.
        Assert.False(Directory.Exists(Path.Combine(workspace.Root, "other-project")));
        Assert.False(Directory.Exists("/etc/x"));
    }

    [Fact]
    public async Task An_image_whose_entrypoint_exits_at_once_runs_its_job_as_any_other()
    {
        const string image = "gpu-executor-test/exits-at-once:1";
        var created = (await Testbed.DockerAsync("create", Testbed.TestImage, "true")).Trim();
        try
        {
            await Testbed.DockerAsync("commit", "--change", "ENTRYPOINT [\"/bin/false\"]", "--change", "CMD [\"exit 3\"]", created, image);
        }
        finally
        {
            await Testbed.DockerAsync("rm", created);
        }
        using var workspace = new ExecutorWorkspace();

        var run = await workspace.SimulateAsync(new { job_id = 9611, image, script = new[] { "echo the job ran" } });

        Assert.True(run.Result.Outcome == "success", run.Log);
        Assert.Contains("\nthe job ran\n", run.Log);
    }

    [Fact]
    public async Task A_job_that_fills_its_builds_directory_fails_saying_the_disk_is_full_and_cleanup_frees_it()
    {
        var small = Directory.CreateTempSubdirectory("gpu-executor-small-disk").FullName;
        try
        {
            await using var disk = await SmallDisk.MountAsync(small, mebibytes: 16);
            if (disk is null)
                return;
            using var workspace = new ExecutorWorkspace(removeBuildsDir: true, buildsHostDir: small);

            var run = await workspace.SimulateAsync(new { job_id = 9612, image = Testbed.TestImage, script = new[] { "head -c 64m /dev/zero > outputs.bin", "echo not reached" } });

            Assert.True(run.Result.Outcome == "failed", run.Log);
            // BusyBox's head says only "I/O error": the executor's word names the cause.
            Assert.Contains("ERROR: the job's builds directory is full during stage 'build_script': 0 bytes left of 16 MiB on its filesystem on the host.", run.Log);
            // Cleanup removed the job's builds directory, and with it the space it took.
            Assert.True(new DriveInfo(small).AvailableFreeSpace > 15L << 20, "cleanup left the small disk full");
        }
        finally
        {
            Directory.Delete(small, recursive: true);
        }
    }

    [Fact]
    public async Task A_checkpoint_directory_of_a_hundred_thousand_files_is_committed_whole_and_restored_whole()
    {
        // 100 directories of 1,000 small files: a sharded optimizer state, or a dataset a trainer
        // wrongly saves with its checkpoint. Every file is one object in the store.
        using var workspace = new ExecutorWorkspace(extraConfig: "[checkpoints]\nfinal_commit_wait_seconds = 500");
        const long jobId = 9621;
        object Job(long id, int timeoutSeconds, params string[] script) => new
        {
            job_id = id,
            name = "train",
            image = Testbed.TestImage,
            timeout = timeoutSeconds,
            variables = new Dictionary<string, string> { ["CHECKPOINTS"] = "on" },
            script,
        };
        var watch = new ProcessWatch(workspace.ConfigPath);
        using var sampling = new CancellationTokenSource();
        var sampler = Task.Run(async () =>
        {
            while (!sampling.IsCancellationRequested)
            {
                watch.Sample();
                await Task.Delay(500, CancellationToken.None);
            }
        }, TestContext.Current.CancellationToken);

        var clock = System.Diagnostics.Stopwatch.StartNew();
        var first = await workspace.SimulateAsync(Job(jobId, 1800,
            "cd \"$CHECKPOINT_DIR\" && for d in $(seq 0 99); do mkdir s$d; for f in $(seq 0 999); do echo \"$d/$f\" > s$d/f$f; done; done; echo written"));
        var firstSeconds = clock.Elapsed.TotalSeconds;
        clock.Restart();
        var next = await workspace.SimulateAsync(Job(jobId + 1, 1800,
            "find \"$CHECKPOINT_DIR\" -type f -name 'f*' | wc -l > count.txt; cat \"$CHECKPOINT_DIR/s77/f777\" > sample.txt"));
        var nextSeconds = clock.Elapsed.TotalSeconds;
        await sampling.CancelAsync();
        await sampler;

        Assert.True(first.Result.Outcome == "success", first.Log);
        Assert.Contains("Checkpoint: generation 1", first.Log);
        Assert.True(next.Result.Outcome == "success", next.Log);
        var projectDir = workspace.ProjectDirOnHost(jobId + 1);
        Assert.Equal("100000", File.ReadAllText(Path.Combine(projectDir, "count.txt")).Trim());
        Assert.Equal("77/777", File.ReadAllText(Path.Combine(projectDir, "sample.txt")).Trim());
        // About 3 KiB per file at the peak (measured: 300 MiB); a bound well above it catches a
        // commit that starts holding the files' contents, or a copy of its list per file.
        var agentPeakKiB = watch.PeakByVerb.GetValueOrDefault("checkpoints agent");
        Assert.True(agentPeakKiB < 768 * 1024, $"the agent's peak RSS was {agentPeakKiB} KiB");
        var reports = Path.Combine(Testbed.RepositoryRoot, "artifacts", "test-reports");
        Directory.CreateDirectory(reports);
        File.WriteAllText(Path.Combine(reports, "checkpoint-100k-files.txt"), string.Join("\n",
        [
            "A checkpoint directory of 100,000 files (100 x 1,000, a few bytes each), built-in local store",
            $"job writing and committing them: {firstSeconds:0.0} s; the next job restoring them: {nextSeconds:0.0} s",
            "peak RSS by verb (KiB):",
            .. watch.PeakByVerb.OrderBy(pair => pair.Key, StringComparer.Ordinal).Select(pair => $"  {pair.Key}: {pair.Value}"),
        ]) + "\n");
    }

    [Fact]
    public async Task A_gigabyte_on_one_line_streams_through_cut_in_the_job_log_whole_on_the_host_and_with_bounded_memory()
    {
        using var workspace = new ExecutorWorkspace(extraConfig: "[logs]\njob_log_budget = \"1m\"");
        const long jobId = 9613;
        const long size = 1L << 30;

        var run = await workspace.SimulateAsync(new
        {
            job_id = jobId,
            image = Testbed.TestImage,
            script = new[] { $"head -c {size} /dev/zero | tr '\\0' x; echo; echo the line ended" },
        });

        Assert.True(run.Result.Outcome == "success", run.Log);
        Assert.Contains("the line ended", run.Log);
        Assert.True(run.Log.Length < 2 << 20, $"the job log holds {run.Log.Length} characters");
        // The host's copy holds the line whole (counted as it streams: it is too big to hold here).
        var (counted, xs, countError) = await Testbed.RunAsync("bash", ["-c", "\"$0\" --config \"$1\" logs \"$2\" | tr -cd x | wc -c", Testbed.Binary, workspace.ConfigPath, jobId.ToString(System.Globalization.CultureInfo.InvariantCulture)], null, workspace.Root);
        Assert.True(counted == 0, countError);
        // (The runner's echo of the command holds one more.)
        Assert.Equal(size + 1, long.Parse(xs.Trim(), System.Globalization.CultureInfo.InvariantCulture));
        // The executor's memory stayed bounded: the run call that streamed the line, against a quiet one.
        var events = await workspace.CallVerbAsync(new Dictionary<string, string?>(), "events", "--job", jobId.ToString(System.Globalization.CultureInfo.InvariantCulture), "--json");
        var peaks = events.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => System.Text.Json.JsonDocument.Parse(line).RootElement)
            .Where(line => line.GetProperty("verb").GetString() == "run")
            .ToDictionary(line => line.GetProperty("stage").GetString()!, line => line.GetProperty("peak_rss_kib").GetInt64());
        var report = $"peak RSS of the run verb streaming one {size >> 20} MiB line: {peaks["build_script"]} KiB; the job's quiet stages at most {peaks.Where(pair => pair.Key != "build_script").Max(pair => pair.Value)} KiB";
        var reports = Directory.CreateDirectory(Path.Combine(Testbed.RepositoryRoot, "artifacts", "test-reports")).FullName;
        await File.WriteAllTextAsync(Path.Combine(reports, "one-line-peak-rss.txt"), report + "\n", TestContext.Current.CancellationToken);
        Assert.True(peaks["build_script"] < peaks.Where(pair => pair.Key != "build_script").Max(pair => pair.Value) + 48 * 1024, report);
    }
}
