using GpuExecutor.Checkpoints;

namespace GpuExecutor.Tests;

/// <summary>
/// The warm hand-over's shortcut (issue 13): the work directory is kept in place only while it
/// holds exactly what this host's agent committed, every file untouched since.
/// </summary>
public sealed class LocalCommitTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("gpu-executor-local-commit").FullName;
    private readonly RunDirectories _directories;

    public LocalCommitTests()
    {
        _directories = new RunDirectories(_root);
        Directory.CreateDirectory(Path.Combine(_directories.Work, "model"));
        Directory.CreateDirectory(_directories.Snapshots);
        File.WriteAllText(Path.Combine(_directories.Work, "model", "weights.bin"), "weights");
        File.WriteAllText(Path.Combine(_directories.Work, "counter.ckpt"), "step=40\n");
    }

    public void Dispose() => Directory.Delete(_root, recursive: true);

    /// <summary>Commits the work directory as generation 7, as the agent does, and returns its record and manifest.</summary>
    private (LocalCommit Local, CheckpointManifest Manifest) Commit()
    {
        var snapshot = new CheckpointSnapshotter(_directories.Work, _directories.Snapshots).Take()!;
        var manifest = new CheckpointManifest(CheckpointManifest.CurrentFormat, "run", 7, 1, DateTimeOffset.UtcNow,
            snapshot.Files.Select(file => new CheckpointFile(file.Path, file.Sha256, file.Size, file.Mode)).ToList());
        var local = LocalCommit.Of(7, snapshot);
        local.Write(_directories);
        return (LocalCommit.Read(_directories)!, manifest);
    }

    [Fact]
    public void An_untouched_directory_holds_the_generation_it_committed_and_no_other()
    {
        var (local, manifest) = Commit();
        Assert.True(local.StillHolds(manifest, _directories.Work));
        Assert.False(local.StillHolds(manifest with { Generation = 8 }, _directories.Work));
        Assert.False(local.StillHolds(manifest with { Files = manifest.Files.Select(file => file with { Sha256 = new string('0', 64) }).ToList() }, _directories.Work));
    }

    [Theory]
    [InlineData("rewritten")]
    [InlineData("chmod")]
    [InlineData("utime back")]
    [InlineData("extra file")]
    [InlineData("symlinked directory")]
    [InlineData("removed")]
    public void Any_change_since_the_commit_means_a_full_restore(string change)
    {
        var (local, manifest) = Commit();
        var weights = Path.Combine(_directories.Work, "model", "weights.bin");
        var modified = File.GetLastWriteTimeUtc(weights);
        Thread.Sleep(20);
        switch (change)
        {
            case "rewritten":
                File.WriteAllText(weights, "WEIGHTS");
                break;
            case "chmod":
                File.SetUnixFileMode(weights, UnixFileMode.UserRead);
                break;
            case "utime back":
                // Same bytes length, mtime set back as it was: only ctime tells.
                File.WriteAllText(weights, "WEIGHTZ");
                File.SetLastWriteTimeUtc(weights, modified);
                break;
            case "extra file":
                File.WriteAllText(Path.Combine(_directories.Work, "notes.tmp"), "");
                break;
            case "symlinked directory":
                var elsewhere = Directory.CreateDirectory(Path.Combine(_root, "elsewhere")).FullName;
                File.Move(weights, Path.Combine(elsewhere, "weights.bin"));
                Directory.Delete(Path.Combine(_directories.Work, "model"));
                Directory.CreateSymbolicLink(Path.Combine(_directories.Work, "model"), elsewhere);
                break;
            case "removed":
                File.Delete(weights);
                break;
        }
        Assert.False(local.StillHolds(manifest, _directories.Work));
    }
}
