using System.Security.Cryptography;
using System.Text;
using GpuExecutor.Checkpoints;
using GpuExecutor.Configuration;
using GpuExecutor.HostFiles;
using GpuExecutor.Outcomes;
using GpuExecutor.Storage;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// The commit protocol and restore against the real s3rver (through the counting, fault-injecting
/// proxy where the test needs to see or break requests) and against the local file store.
/// </summary>
public sealed class CheckpointStoreTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("gpu-executor-ckpt").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private sealed class CrashedHere : Exception;

    private static IObjectStore S3(string endpoint) => new S3ObjectStore(new StoreSettings
    {
        Name = "s3",
        Kind = StoreKind.S3,
        Endpoint = endpoint,
        PathStyle = true,
        AccessKeyId = new Secret("S3RVER"),
        SecretAccessKey = new Secret("S3RVER"),
    });

    private async Task<(IObjectStore Store, string Bucket)> OpenAsync(string kind, string? endpoint = null)
    {
        if (kind == "file")
            return (new FileObjectStore(Path.Combine(_root, "store")), "checkpoints");
        Testbed.Require();
        var bucket = "ckpt-" + Guid.NewGuid().ToString("N")[..12];
        using var client = S3Testbed.Client();
        await S3Testbed.CreateBucketAsync(client, bucket);
        return (S3(endpoint ?? S3Testbed.Endpoint), bucket);
    }

    private RunDirectories Directories(string name)
    {
        var directories = new RunDirectories(Path.Combine(_root, name));
        Directory.CreateDirectory(directories.Work);
        Directory.CreateDirectory(directories.Snapshots);
        return directories;
    }

    private static void Write(RunDirectories directories, string path, byte[] content)
    {
        var full = Path.Combine(directories.Work, path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        File.WriteAllBytes(full, content);
    }

    private static Dictionary<string, string> Hashes(string directory) =>
        Directory.EnumerateFiles(directory, "*", SearchOption.AllDirectories)
            .ToDictionary(path => Path.GetRelativePath(directory, path), path => Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(path))));

    private static CheckpointRepository Repository(IObjectStore store, string bucket) => new(store, bucket, "team/", "run-test", _ => { });

    [Theory]
    [InlineData("s3")]
    [InlineData("file")]
    public async Task A_committed_generation_restores_byte_for_byte_with_its_modes(string kind)
    {
        var (store, bucket) = await OpenAsync(kind);
        using var _ = store;
        var source = Directories("source");
        Write(source, "model/weights.bin", RandomNumberGenerator.GetBytes(3 << 20));
        Write(source, "model/optimizer.bin", RandomNumberGenerator.GetBytes(70 << 20)); // multipart on S3
        Write(source, "counter.ckpt", "step=40\n"u8.ToArray());
        Write(source, "empty", []);
        File.SetUnixFileMode(Path.Combine(source.Work, "counter.ckpt"), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);

        var repository = Repository(store, bucket);
        var snapshot = new CheckpointSnapshotter(source.Work, source.Snapshots).Take()!;
        var committed = await repository.CommitAsync(snapshot, 77, 3, null, CancellationToken.None);
        Assert.Equal(1, committed.Generation);
        Assert.Equal(4, committed.UploadedFiles);

        var target = Directories("target");
        var restored = await new CheckpointRestorer(repository, target, _ => { }).RestoreAsync(null, CancellationToken.None);
        Assert.NotNull(restored);
        Assert.Equal((1L, 77L, 4), (restored.Generation, restored.FromJobId, restored.Files));
        Assert.Equal(Hashes(source.Work), Hashes(target.Work));
        Assert.True(File.GetUnixFileMode(Path.Combine(target.Work, "counter.ckpt")).HasFlag(UnixFileMode.UserExecute));
        Assert.Empty(await repository.VerifyAsync(1, deep: true, CancellationToken.None));
    }

    /// <summary>Four shards of <paramref name="shardBytes"/> committed as generation 1 to s3rver through a counting proxy.</summary>
    private sealed record FourShards(CountingProxy Proxy, IObjectStore Store, CheckpointRepository Repository, CheckpointSnapshotter Snapshotter, RunDirectories Source) : IDisposable
    {
        public void Dispose()
        {
            Store.Dispose();
            Proxy.Dispose();
        }
    }

    private async Task<FourShards> CommitFourShardsAsync(int shardBytes)
    {
        Testbed.Require();
        var proxy = new CountingProxy(S3Testbed.Endpoint);
        var (store, bucket) = await OpenAsync("s3", proxy.Endpoint);
        var source = Directories("source");
        for (var index = 0; index < 4; index++)
            Write(source, $"shard-{index}.bin", RandomNumberGenerator.GetBytes(shardBytes));
        var repository = Repository(store, bucket);
        var snapshotter = new CheckpointSnapshotter(source.Work, source.Snapshots);
        var first = snapshotter.Take()!;
        await repository.CommitAsync(first, 1, 3, null, TestContext.Current.CancellationToken);
        snapshotter.Committed(first);
        return new FourShards(proxy, store, repository, snapshotter, source);
    }

    [Fact]
    public async Task Only_the_changed_file_of_four_is_uploaded_again()
    {
        using var shards = await CommitFourShardsAsync(1 << 20);
        var (proxy, repository, snapshotter, source) = (shards.Proxy, shards.Repository, shards.Snapshotter, shards.Source);

        Write(source, "shard-2.bin", RandomNumberGenerator.GetBytes(1 << 20));
        var before = proxy.BytesReceived;
        var second = await repository.CommitAsync(snapshotter.Take()!, 2, 3, null, CancellationToken.None);

        Assert.Equal((2L, 1, 1L << 20), (second.Generation, second.UploadedFiles, second.UploadedBytes));
        // What crossed the wire: the one changed blob, plus a manifest and LATEST of a few hundred bytes.
        var sent = proxy.BytesReceived - before;
        Assert.InRange(sent, 1L << 20, (1L << 20) + 4096);
    }

    [Fact]
    public async Task Files_uploaded_side_by_side_go_whole_and_a_lone_large_file_goes_in_parts()
    {
        using var shards = await CommitFourShardsAsync(65 << 20);
        var (proxy, repository, snapshotter, source) = (shards.Proxy, shards.Repository, shards.Snapshotter, shards.Source);
        // Four blobs beside each other fill the upload streams: one PUT each, then manifest and LATEST.
        Assert.Equal(4 + 2, proxy.ObjectPuts);

        Write(source, "shard-1.bin", RandomNumberGenerator.GetBytes(65 << 20));
        var before = proxy.ObjectPuts;
        await repository.CommitAsync(snapshotter.Take()!, 2, 3, null, TestContext.Current.CancellationToken);
        // Alone, the 65 MiB blob is split into 16 MiB parts sent side by side: 5 part PUTs.
        Assert.Equal(5 + 2, proxy.ObjectPuts - before);

        var target = Directories("target");
        await new CheckpointRestorer(repository, target, _ => { }).RestoreAsync(null, TestContext.Current.CancellationToken);
        Assert.Equal(Hashes(source.Work), Hashes(target.Work));
    }

    [Fact]
    public async Task The_file_store_keeps_the_snapshot_copy_as_its_blob_without_copying_it_again()
    {
        var (store, bucket) = await OpenAsync("file");
        using var _ = store;
        var source = Directories("source");
        var original = RandomNumberGenerator.GetBytes(3 << 20);
        Write(source, "weights.bin", original);
        var repository = Repository(store, bucket);
        var snapshotter = new CheckpointSnapshotter(source.Work, source.Snapshots);
        var snapshot = snapshotter.Take()!;
        await repository.CommitAsync(snapshot, 1, 3, null, TestContext.Current.CancellationToken);
        snapshotter.Committed(snapshot);

        var blob = Directory.GetFiles(Path.Combine(_root, "store"), "*", SearchOption.AllDirectories).Single(path => path.Contains("/blobs/", StringComparison.Ordinal));
        var staged = snapshot.Files.Single().StagedPath;
        Assert.Equal(Inode(staged), Inode(blob));
        Assert.NotEqual(Inode(Path.Combine(source.Work, "weights.bin")), Inode(blob));

        // The trainer overwrites its file in place: the committed generation must not change.
        using (var inPlace = new FileStream(Path.Combine(source.Work, "weights.bin"), FileMode.Open, FileAccess.Write))
            inPlace.Write(RandomNumberGenerator.GetBytes(3 << 20));
        var target = Directories("target");
        await new CheckpointRestorer(repository, target, _ => { }).RestoreAsync(1, TestContext.Current.CancellationToken);
        Assert.Equal(original, File.ReadAllBytes(Path.Combine(target.Work, "weights.bin")));
    }

    private static ulong Inode(string path) => NoFollowFiles.Lstat(path)!.Value.Inode;

    [Theory]
    [InlineData(CommitStep.BlobsUploaded, 1)]
    [InlineData(CommitStep.ManifestWritten, 1)]
    [InlineData(CommitStep.LatestWritten, 2)]
    public async Task A_crash_at_each_step_of_a_commit_leaves_a_complete_generation(CommitStep crashAfter, long expectedGeneration)
    {
        var (store, bucket) = await OpenAsync("s3");
        using var _ = store;
        var source = Directories("source");
        Write(source, "counter.ckpt", "step=40\n"u8.ToArray());
        Write(source, "weights.bin", RandomNumberGenerator.GetBytes(1 << 20));
        var repository = Repository(store, bucket);
        var snapshotter = new CheckpointSnapshotter(source.Work, source.Snapshots);
        await repository.CommitAsync(snapshotter.Take()!, 1, 3, null, CancellationToken.None);
        var generationOne = Hashes(source.Work);

        Write(source, "counter.ckpt", "step=80\n"u8.ToArray());
        Write(source, "weights.bin", RandomNumberGenerator.GetBytes(1 << 20));
        var generationTwo = Hashes(source.Work);
        await Assert.ThrowsAsync<CrashedHere>(() => repository.CommitAsync(snapshotter.Take()!, 2, 3, step => step == crashAfter ? throw new CrashedHere() : Task.CompletedTask, CancellationToken.None));

        var target = Directories("target");
        var restored = await new CheckpointRestorer(repository, target, _ => { }).RestoreAsync(null, CancellationToken.None);
        Assert.Equal(expectedGeneration, restored!.Generation);
        Assert.Equal(expectedGeneration == 1 ? generationOne : generationTwo, Hashes(target.Work));

        // The next commit goes past the manifest the crash left, and is whole.
        var next = await repository.CommitAsync(snapshotter.Take()!, 3, 3, null, CancellationToken.None);
        Assert.True(next.Generation > expectedGeneration);
        Assert.Empty(await repository.VerifyAsync(next.Generation, deep: true, CancellationToken.None));
    }

    [Fact]
    public async Task A_commit_cut_off_mid_blob_leaves_the_previous_generation_and_commits_retry_through_faults()
    {
        Testbed.Require();
        // PUTs 1-3 (generation one's blob, manifest, LATEST) pass; then every PUT resets: the store is down.
        var storeDown = false;
        using var proxy = new CountingProxy(S3Testbed.Endpoint, putFaultFor: number => number > 3 && Volatile.Read(ref storeDown) ? InjectedFault.ConnectionReset : number is 2 ? InjectedFault.ServiceUnavailable : InjectedFault.None);
        var (store, bucket) = await OpenAsync("s3", proxy.Endpoint);
        using var _ = store;
        var source = Directories("source");
        Write(source, "weights.bin", RandomNumberGenerator.GetBytes(2 << 20));
        var repository = Repository(store, bucket);
        var snapshotter = new CheckpointSnapshotter(source.Work, source.Snapshots);
        var first = await repository.CommitAsync(snapshotter.Take()!, 1, 3, null, CancellationToken.None);
        Assert.Equal(1, first.Generation);
        Assert.True(proxy.FaultsInjected >= 1, "the 503 was not injected");
        var generationOne = Hashes(source.Work);

        Volatile.Write(ref storeDown, true);
        Write(source, "weights.bin", RandomNumberGenerator.GetBytes(2 << 20));
        var failed = await Assert.ThrowsAsync<ObjectStoreException>(() => repository.CommitAsync(snapshotter.Take()!, 2, 3, null, CancellationToken.None));
        Assert.Contains("blob", failed.Message);

        var target = Directories("target");
        var restored = await new CheckpointRestorer(repository, target, _ => { }).RestoreAsync(null, CancellationToken.None);
        Assert.Equal(1, restored!.Generation);
        Assert.Equal(generationOne, Hashes(target.Work));
    }

    [Theory]
    [InlineData("../../escaped", "'..'")]
    [InlineData("/tmp/escaped", "absolute")]
    [InlineData("a/./b", "'.'")]
    [InlineData("ok\nname", "control character")]
    public async Task A_hostile_manifest_is_refused_and_nothing_is_written_anywhere(string path, string reason)
    {
        var (store, bucket) = await OpenAsync("file");
        using var _ = store;
        var blob = "hello"u8.ToArray();
        var sha = Convert.ToHexStringLower(SHA256.HashData(blob));
        var manifest = $$"""{"format":1,"run_key":"run-test","generation":1,"job_id":1,"committed_at":"2026-11-28T00:00:00Z","files":[{"path":{{System.Text.Json.JsonSerializer.Serialize(path)}},"sha256":"{{sha}}","size":5,"mode":420}]}""";
        await store.PutBytesAsync(bucket, $"team/runs/run-test/blobs/{sha}", blob, CancellationToken.None);
        await store.PutBytesAsync(bucket, "team/runs/run-test/manifests/000000000001.json", Encoding.UTF8.GetBytes(manifest), CancellationToken.None);
        await store.PutBytesAsync(bucket, "team/runs/run-test/LATEST", "1\n"u8.ToArray(), CancellationToken.None);
        var target = Directories("target");
        Write(target, "kept.txt", "the old work directory"u8.ToArray());

        var refused = await Assert.ThrowsAsync<BuildFailureException>(() => new CheckpointRestorer(Repository(store, bucket), target, _ => { }).RestoreAsync(null, CancellationToken.None));
        Assert.Contains(reason, refused.Message);
        Assert.False(File.Exists("/tmp/escaped"));
        Assert.Empty(Directory.EnumerateFileSystemEntries(_root, "escaped", SearchOption.AllDirectories));
        Assert.Equal(["kept.txt"], Hashes(target.Work).Keys);
    }

    [Fact]
    public async Task A_manifest_describing_a_symlink_is_refused()
    {
        var (store, bucket) = await OpenAsync("file");
        using var _ = store;
        var manifest = """{"format":1,"run_key":"run-test","generation":1,"job_id":1,"committed_at":"2026-11-28T00:00:00Z","files":[{"path":"etc","sha256":"aa","size":0,"mode":420,"link_target":"/etc"}]}""";
        await store.PutBytesAsync(bucket, "team/runs/run-test/manifests/000000000001.json", Encoding.UTF8.GetBytes(manifest), CancellationToken.None);
        await store.PutBytesAsync(bucket, "team/runs/run-test/LATEST", "1\n"u8.ToArray(), CancellationToken.None);
        var refused = await Assert.ThrowsAsync<BuildFailureException>(() => new CheckpointRestorer(Repository(store, bucket), Directories("target"), _ => { }).RestoreAsync(null, CancellationToken.None));
        Assert.Contains("refused", refused.Message);
        Assert.False(File.Exists(Path.Combine(_root, "target", "work", "etc")));
    }

    [Fact]
    public async Task Symlinks_in_the_checkpoint_directory_are_not_followed_at_commit_nor_at_restore()
    {
        var (store, bucket) = await OpenAsync("file");
        using var _ = store;
        var source = Directories("source");
        Write(source, "counter.ckpt", "step=1\n"u8.ToArray());
        File.CreateSymbolicLink(Path.Combine(source.Work, "etc"), "/etc");
        File.CreateSymbolicLink(Path.Combine(source.Work, "passwd"), "/etc/passwd");
        Directory.CreateDirectory(Path.Combine(source.Work, "sub"));
        File.CreateSymbolicLink(Path.Combine(source.Work, "sub", "hosts"), "/etc/hosts");

        var snapshot = new CheckpointSnapshotter(source.Work, source.Snapshots).Take()!;
        Assert.Equal(["counter.ckpt"], snapshot.Files.Select(file => file.Path));
        var repository = Repository(store, bucket);
        await repository.CommitAsync(snapshot, 1, 3, null, CancellationToken.None);

        // The next job's old work directory has a symlink where restore will put a file.
        var target = Directories("target");
        var outside = Path.Combine(_root, "outside.txt");
        File.WriteAllText(outside, "untouched");
        File.CreateSymbolicLink(Path.Combine(target.Work, "counter.ckpt"), outside);
        await new CheckpointRestorer(repository, target, _ => { }).RestoreAsync(null, CancellationToken.None);
        Assert.Equal("untouched", File.ReadAllText(outside));
        Assert.Null(new FileInfo(Path.Combine(target.Work, "counter.ckpt")).LinkTarget);
        Assert.Equal("step=1\n", File.ReadAllText(Path.Combine(target.Work, "counter.ckpt")));
    }

    [Fact]
    public async Task In_progress_files_are_never_committed_and_retention_keeps_the_newest_generations()
    {
        var (store, bucket) = await OpenAsync("file");
        using var _ = store;
        var source = Directories("source");
        var repository = Repository(store, bucket);
        var snapshotter = new CheckpointSnapshotter(source.Work, source.Snapshots);
        for (var step = 1; step <= 5; step++)
        {
            Write(source, "counter.ckpt", Encoding.ASCII.GetBytes($"step={step}\n"));
            Write(source, $"model-{step}.pt.tmp", "half"u8.ToArray());
            Write(source, $"shard.partial", "half"u8.ToArray());
            Write(source, $"ckpt-{step}-unfinished/a.bin", "half"u8.ToArray());
            var snapshot = snapshotter.Take()!;
            Assert.Equal(["counter.ckpt"], snapshot.Files.Select(file => file.Path));
            await repository.CommitAsync(snapshot, step, 2, null, CancellationToken.None);
            snapshotter.Committed(snapshot);
        }
        Assert.Equal([4L, 5L], await repository.ListGenerationsAsync(CancellationToken.None));
        var blobs = Directory.GetFiles(Path.Combine(_root, "store", "checkpoints", "team", "runs", "run-test", "blobs"));
        Assert.Equal(2, blobs.Length);
    }
}

/// <summary>The commit protocol under a real SIGKILL of the committing process, at each step.</summary>
public sealed class CheckpointKillTests : IDisposable
{
    private readonly ExecutorWorkspace _workspace = new(extraConfig: "[checkpoints]\nkeep_generations = 10");

    public void Dispose() => _workspace.Dispose();

    private async Task<(int ExitCode, string Output)> CheckpointsAsync(Dictionary<string, string?>? environment, params string[] arguments)
    {
        var (exitCode, stdout, stderr) = await Testbed.RunAsync(Testbed.Binary, ["--config", _workspace.ConfigPath, "checkpoints", .. arguments], environment, _workspace.Root);
        return (exitCode, stdout + stderr);
    }

    private string WriteCheckpoint(string name, int step)
    {
        var directory = Directory.CreateDirectory(Path.Combine(_workspace.Root, name)).FullName;
        File.WriteAllText(Path.Combine(directory, "counter.ckpt"), $"step={step}\n");
        File.WriteAllBytes(Path.Combine(directory, "weights.bin"), RandomNumberGenerator.GetBytes(4 << 20));
        return directory;
    }

    [Theory]
    [InlineData("BlobsUploaded", "step=10")]
    [InlineData("ManifestWritten", "step=10")]
    [InlineData("LatestWritten", "step=20")]
    public async Task A_commit_killed_with_sigkill_after_each_step_leaves_a_complete_generation(string killAfter, string expected)
    {
        Assert.Equal(0, (await CheckpointsAsync(null, "push", "run-kill", WriteCheckpoint("first", 10))).ExitCode);
        var killed = await CheckpointsAsync(new() { ["GPU_EXECUTOR_FAULT_KILL_AFTER"] = killAfter }, "push", "run-kill", WriteCheckpoint("second", 20));
        Assert.Equal(137, killed.ExitCode);

        var pulled = await CheckpointsAsync(null, "pull", "run-kill");
        Assert.True(pulled.ExitCode == 0, pulled.Output);
        var work = Path.Combine(_workspace.Root, "state", "checkpoints", "run-kill", "work");
        Assert.Equal(expected + "\n", File.ReadAllText(Path.Combine(work, "counter.ckpt")));
        var verified = await CheckpointsAsync(null, "verify", "run-kill", "--deep");
        Assert.True(verified.ExitCode == 0, verified.Output);
    }
}
