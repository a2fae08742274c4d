using System.Security.Cryptography;

namespace GpuExecutor.IntegrationTests;

/// <summary>`checkpoints verify` against s3rver, with a blob rotted in the server's own files (issue 13).</summary>
public sealed class CheckpointVerifyTests
{
    [Fact]
    public async Task A_blob_whose_bytes_rotted_in_the_store_is_a_finding_naming_the_file_and_both_hashes_with_its_own_exit_code()
    {
        var bucket = "verify-" + Guid.NewGuid().ToString("N")[..8];
        using (var client = S3Testbed.Client())
            await S3Testbed.CreateBucketAsync(client, bucket);
        using var workspace = new ExecutorWorkspace(extraConfig: $"{S3Testbed.StoreConfig("s3", S3Testbed.Endpoint, $"\"{bucket}\"")}\n[checkpoints]\nstore = \"s3\"\nbucket = \"{bucket}\"\n");
        var checkpoint = Directory.CreateDirectory(Path.Combine(workspace.Root, "checkpoint")).FullName;
        var weights = RandomNumberGenerator.GetBytes(1 << 20);
        File.WriteAllBytes(Path.Combine(checkpoint, "weights.bin"), weights);
        var pushed = await workspace.CallVerbAsync(new Dictionary<string, string?>(), "checkpoints", "push", "run-rot", checkpoint);
        Assert.True(pushed.ExitCode == 0, pushed.Stderr);

        // The blob's bytes change on the server's disk, its size and recorded ETag do not.
        var expected = Convert.ToHexStringLower(SHA256.HashData(weights));
        var stored = Directory.EnumerateFiles(Path.Combine(Environment.GetEnvironmentVariable("GPU_EXECUTOR_TESTBED_DIR")!, "s3-data", bucket), "*", SearchOption.AllDirectories)
            .Single(path => path.Contains(expected, StringComparison.Ordinal) && path.EndsWith("._S3rver_object", StringComparison.Ordinal));
        var rotted = (byte[])weights.Clone();
        rotted[4096] ^= 0xff;
        File.WriteAllBytes(stored, rotted);

        var shallow = await workspace.CallVerbAsync(new Dictionary<string, string?>(), "checkpoints", "verify", "run-rot");
        Assert.True(shallow.ExitCode == 0, shallow.Stdout + shallow.Stderr);
        var deep = await workspace.CallVerbAsync(new Dictionary<string, string?>(), "checkpoints", "verify", "run-rot", "--deep");

        Assert.Equal(3, deep.ExitCode);
        Assert.Contains($"run run-rot generation 1: weights.bin: blob expected sha256 {expected}, actual sha256 {Convert.ToHexStringLower(SHA256.HashData(rotted))}", deep.Stdout);
        Assert.Contains("failed verification", deep.Stderr);
        Assert.DoesNotContain("unexpected error", deep.Stderr);
    }
}
