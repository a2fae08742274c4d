using System.Security.Cryptography;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// A run whose newest generation rotted or lost a blob in s3rver (changed in the server's own
/// files, under its recorded size and ETag): `checkpoints verify` reports it, and restore falls
/// back to the newest generation that is whole, records the bad one and keeps it (issue 13).
/// </summary>
public sealed class CorruptCheckpointTests : IDisposable
{
    private readonly string _bucket = "corrupt-" + Guid.NewGuid().ToString("N")[..8];
    private readonly ExecutorWorkspace _workspace;
    private readonly Dictionary<string, string?> _noEnvironment = [];

    public CorruptCheckpointTests()
    {
        using (var client = S3Testbed.Client())
            S3Testbed.CreateBucketAsync(client, _bucket).GetAwaiter().GetResult();
        _workspace = new ExecutorWorkspace(extraConfig: $"{S3Testbed.StoreConfig("s3", S3Testbed.Endpoint, $"\"{_bucket}\"")}\n[checkpoints]\nstore = \"s3\"\nbucket = \"{_bucket}\"\n");
    }

    public void Dispose() => _workspace.Dispose();

    /// <summary>Commits one generation holding weights.bin with <paramref name="weights"/>, as an admin's push.</summary>
    private async Task PushAsync(string run, byte[] weights)
    {
        var checkpoint = Path.Combine(_workspace.Root, "checkpoint-" + Guid.NewGuid().ToString("N")[..6]);
        Directory.CreateDirectory(checkpoint);
        File.WriteAllBytes(Path.Combine(checkpoint, "weights.bin"), weights);
        var pushed = await _workspace.CallVerbAsync(_noEnvironment, "checkpoints", "push", run, checkpoint);
        Assert.True(pushed.ExitCode == 0, pushed.Stderr);
    }

    /// <summary>The file s3rver keeps a blob's bytes in.</summary>
    private string StoredBlob(byte[] content)
    {
        var sha256 = Convert.ToHexStringLower(SHA256.HashData(content));
        return Directory.EnumerateFiles(Path.Combine(Environment.GetEnvironmentVariable("GPU_EXECUTOR_TESTBED_DIR")!, "s3-data", _bucket), "*", SearchOption.AllDirectories)
            .Single(path => path.Contains(sha256, StringComparison.Ordinal) && path.EndsWith("._S3rver_object", StringComparison.Ordinal));
    }

    /// <summary>Flips one byte of the blob on the server's disk; its size and recorded ETag stay.</summary>
    private byte[] Rot(byte[] content)
    {
        var rotted = (byte[])content.Clone();
        rotted[4096] ^= 0xff;
        File.WriteAllBytes(StoredBlob(content), rotted);
        return rotted;
    }

    [Fact]
    public async Task A_blob_whose_bytes_rotted_in_the_store_is_a_finding_naming_the_file_and_both_hashes_with_its_own_exit_code()
    {
        var weights = RandomNumberGenerator.GetBytes(1 << 20);
        await PushAsync("run-rot", weights);
        var rotted = Rot(weights);

        var shallow = await _workspace.CallVerbAsync(_noEnvironment, "checkpoints", "verify", "run-rot");
        Assert.True(shallow.ExitCode == 0, shallow.Stdout + shallow.Stderr);
        var deep = await _workspace.CallVerbAsync(_noEnvironment, "checkpoints", "verify", "run-rot", "--deep");

        Assert.Equal(3, deep.ExitCode);
        Assert.Contains($"run run-rot generation 1: weights.bin: blob expected sha256 {Convert.ToHexStringLower(SHA256.HashData(weights))}, actual sha256 {Convert.ToHexStringLower(SHA256.HashData(rotted))}", deep.Stdout);
        Assert.Contains("failed verification", deep.Stderr);
        Assert.DoesNotContain("unexpected error", deep.Stderr);
    }

    [Theory]
    [InlineData("rotted")]
    [InlineData("missing")]
    public async Task Restore_falls_back_past_a_bad_newest_generation_records_it_keeps_it_and_the_next_commit_repairs_its_blob(string damage)
    {
        var older = RandomNumberGenerator.GetBytes(1 << 20);
        var newest = RandomNumberGenerator.GetBytes(1 << 20);
        await PushAsync("run-bad", older);
        await PushAsync("run-bad", newest);
        if (damage == "rotted")
            Rot(newest);
        else
        {
            using var client = S3Testbed.Client();
            await client.DeleteObjectAsync(_bucket, "runs/run-bad/blobs/" + Convert.ToHexStringLower(SHA256.HashData(newest)), TestContext.Current.CancellationToken);
        }

        // Another host's pull: nothing is in its work directory, every byte comes from the store.
        var pulled = await _workspace.CallVerbAsync(_noEnvironment, "checkpoints", "pull", "run-bad");
        Assert.True(pulled.ExitCode == 0, pulled.Stdout + pulled.Stderr);
        Assert.Contains("checkpoint generation 2 of run 'run-bad' is corrupt and is now recorded as bad: file 'weights.bin'", pulled.Stdout);
        Assert.Contains(damage == "rotted" ? "blob expected sha256" : "is missing from the store", pulled.Stdout);
        Assert.Contains("restored generation 1", pulled.Stdout);
        var work = Path.Combine(_workspace.Root, "state", "checkpoints", "run-bad", "work", "weights.bin");
        Assert.Equal(older, File.ReadAllBytes(work));

        // Pinned, the bad generation fails, and says why.
        var pinned = await _workspace.CallVerbAsync(_noEnvironment, "checkpoints", "pull", "run-bad", "2");
        Assert.NotEqual(0, pinned.ExitCode);
        Assert.Contains("checkpoint generation 2 is corrupt", pinned.Stderr);

        // The next restore skips it without reading it again; the listing shows it as bad.
        var again = await _workspace.CallVerbAsync(_noEnvironment, "checkpoints", "pull", "run-bad");
        Assert.Contains("restored generation 1", again.Stdout);
        var listed = await _workspace.CallVerbAsync(_noEnvironment, "checkpoints", "list", "run-bad");
        Assert.Matches(@"\s2 .*BAD \(found by an admin's restore at .*\): file 'weights.bin'", listed.Stdout);

        // Retention keeps the bad generation for inspection while good ones come and go, and a
        // commit of the same content sends the blob again rather than leaning on the bad one.
        for (var extra = 0; extra < 3; extra++)
            await PushAsync("run-bad", RandomNumberGenerator.GetBytes(4096));
        await PushAsync("run-bad", newest);
        listed = await _workspace.CallVerbAsync(_noEnvironment, "checkpoints", "list", "run-bad");
        Assert.Matches(@"\n\s+2 .*BAD", listed.Stdout);
        Assert.DoesNotContain("\n         1 ", listed.Stdout);
        var verified = await _workspace.CallVerbAsync(_noEnvironment, "checkpoints", "verify", "run-bad", "--deep");
        Assert.True(verified.ExitCode == 0, verified.Stdout + verified.Stderr);
        Assert.Equal(newest, File.ReadAllBytes(StoredBlob(newest)));
    }
}
