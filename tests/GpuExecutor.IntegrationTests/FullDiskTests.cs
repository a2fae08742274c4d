namespace GpuExecutor.IntegrationTests;

/// <summary>
/// The fault matrix's full disks (issue 18): the dataset cache, the checkpoint work directory
/// and the whole of state_dir, each on a small tmpfs of its own. For each: the job's outcome
/// class and a message that names the full filesystem, no corrupt dataset file served, no
/// committed generation lost, nothing left behind, and the next job, with room again, works.
/// </summary>
public sealed class FullDiskTests
{
    private static async Task<string> SeedBucketAsync(int objects, int mebibytesEach)
    {
        var bucket = "full-" + Guid.NewGuid().ToString("N")[..8];
        using var client = S3Testbed.Client();
        await S3Testbed.CreateBucketAsync(client, bucket);
        for (var index = 0; index < objects; index++)
            await S3Testbed.PutAsync(client, bucket, $"train/part-{index}.bin", Enumerable.Range(0, mebibytesEach << 20).Select(offset => (byte)(offset * 7 + index)).ToArray());
        return bucket;
    }

    [Fact]
    public async Task A_full_dataset_cache_is_a_system_failure_naming_it_serves_no_partial_object_and_the_next_job_gets_whole_ones()
    {
        var bucket = await SeedBucketAsync(objects: 3, mebibytesEach: 2);
        using var workspace = new ExecutorWorkspace(extraConfig: S3Testbed.StoreConfig("s3", S3Testbed.Endpoint, $"\"{bucket}\""));
        await using var disk = await SmallDisk.MountAsync(Path.Combine(workspace.Root, "state", "datasets"), mebibytes: 4);
        if (disk is null)
            return;
        object Job(long jobId) => new
        {
            job_id = jobId,
            image = Testbed.TestImage,
            variables = new Dictionary<string, string> { ["DATASETS"] = $"s3://{bucket}/train/ -> /data/train" },
            script = new[] { "md5sum /data/train/*.bin > sums.txt" },
        };

        var full = await workspace.SimulateAsync(Job(9801));

        Assert.True(full.Result.Outcome == "system_failure", full.Log);
        Assert.Contains("no space left", full.Log, StringComparison.OrdinalIgnoreCase);
        Assert.Equal("", (await Testbed.JobContainersAsync(9801)).Trim());

        await disk.GrowAsync(64);
        var next = await workspace.SimulateAsync(Job(9802));
        Assert.True(next.Result.Outcome == "success", next.Log);
        var expected = Enumerable.Range(0, 3).Select(index => Convert.ToHexStringLower(System.Security.Cryptography.MD5.HashData(Enumerable.Range(0, 2 << 20).Select(offset => (byte)(offset * 7 + index)).ToArray()))).ToList();
        var sums = File.ReadAllLines(Path.Combine(workspace.ProjectDirOnHost(9802), "sums.txt")).Select(line => line.Split(' ')[0]).ToList();
        Assert.Equal(expected, sums);
    }

    [Fact]
    public async Task A_full_checkpoint_work_directory_fails_the_job_naming_it_and_keeps_the_committed_generation_for_the_next_job()
    {
        using var workspace = new ExecutorWorkspace(stopGraceSeconds: 5);
        await using var disk = await SmallDisk.MountAsync(Path.Combine(workspace.Root, "state", "checkpoints"), mebibytes: 8);
        if (disk is null)
            return;
        object Job(long jobId, string script) => new
        {
            job_id = jobId,
            name = "train",
            image = Testbed.TestImage,
            variables = new Dictionary<string, string> { ["CHECKPOINTS"] = "on" },
            script = new[] { script },
        };

        var first = await workspace.SimulateAsync(Job(9811, "echo generation-one > \"$CHECKPOINT_DIR/state.txt\""));
        Assert.True(first.Result.Outcome == "success", first.Log);

        // The trainer's next checkpoint does not fit.
        var full = await workspace.SimulateAsync(Job(9812, "cat \"$CHECKPOINT_DIR/state.txt\"; head -c 32m /dev/zero > \"$CHECKPOINT_DIR/weights.bin\""));
        Assert.True(full.Result.Outcome == "failed", full.Log);
        Assert.Contains("the job's checkpoint directory is full", full.Log);
        Assert.Equal("", (await Testbed.JobContainersAsync(9812)).Trim());

        await disk.GrowAsync(128);
        var next = await workspace.SimulateAsync(Job(9813, "cat \"$CHECKPOINT_DIR/state.txt\" > restored.txt"));
        Assert.True(next.Result.Outcome == "success", next.Log);
        Assert.Equal("generation-one", File.ReadAllText(Path.Combine(workspace.ProjectDirOnHost(9813), "restored.txt")).Trim());
    }

    [Fact]
    public async Task A_full_state_dir_costs_only_the_hosts_copy_of_the_log_said_in_the_job_log_and_the_next_job_has_it_whole()
    {
        using var workspace = new ExecutorWorkspace();
        await using var disk = await SmallDisk.MountAsync(Path.Combine(workspace.Root, "state"), mebibytes: 1);
        if (disk is null)
            return;
        // Something else on the host filled the filesystem, to its last block.
        try
        {
            await using var filler = File.Create(Path.Combine(disk.Directory, "filler.bin"));
            await filler.WriteAsync(new byte[2 << 20], TestContext.Current.CancellationToken);
        }
        catch (IOException)
        {
        }

        // Locks, records and the GPU ledger need no room (empty files and Docker's labels): the
        // job runs, and only the host's whole copy of its log is cut short, which it says.
        var full = await workspace.SimulateAsync(new { job_id = 9821, image = Testbed.TestImage, script = new[] { "echo hello" } });

        Assert.True(full.Result.Outcome == "success", full.Log);
        Assert.Contains("WARNING: the whole log of build_script is incomplete on this host", full.Log);
        Assert.Contains("No space left on device", full.Log);
        Assert.Equal("", (await Testbed.JobContainersAsync(9821)).Trim());

        File.Delete(Path.Combine(disk.Directory, "filler.bin"));
        var next = await workspace.SimulateAsync(new { job_id = 9822, image = Testbed.TestImage, script = new[] { "echo hello" } });
        Assert.True(next.Result.Outcome == "success", next.Log);
        Assert.DoesNotContain("incomplete on this host", next.Log);
        var logs = await workspace.CallVerbAsync(workspace.RunnerEnvironment(null), "logs", "9822");
        Assert.Contains("hello", logs.Stdout);
    }
}
