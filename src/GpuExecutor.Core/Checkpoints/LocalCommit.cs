using System.Text.Json.Serialization;
using GpuExecutor.HostFiles;

namespace GpuExecutor.Checkpoints;

/// <summary>One file of the work directory as the agent found it when it committed it.</summary>
public sealed record LocalCommitFile(
    [property: JsonPropertyName("path")] string Path,
    [property: JsonPropertyName("sha256")] string Sha256,
    [property: JsonPropertyName("size")] long Size,
    [property: JsonPropertyName("inode")] ulong Inode,
    [property: JsonPropertyName("modified_ns")] long ModifiedNanoseconds,
    [property: JsonPropertyName("changed_ns")] long ChangedNanoseconds);

/// <summary>
/// The generation the agent last committed from this host's work directory, and each file's
/// identity there then. The hand-over on a warm host: when the next restore wants that very
/// generation and every file is still the same inode with the same size, mtime and ctime (the
/// kernel moves ctime on any write, chmod or utime, and nobody can set it back), the work
/// directory already holds the generation, byte for byte as the agent hashed it: it stays in
/// place, neither copied nor hashed again.
/// </summary>
public sealed record LocalCommit(
    [property: JsonPropertyName("generation")] long Generation,
    [property: JsonPropertyName("files")] IReadOnlyList<LocalCommitFile> Files)
{
    public static LocalCommit Of(long generation, CheckpointSnapshot snapshot) => new(
        generation,
        snapshot.Files.Select(file => new LocalCommitFile(file.Path, file.Sha256, file.Size, file.SourceInode, file.SourceModifiedNanoseconds, file.SourceChangedNanoseconds)).ToList());

    public void Write(RunDirectories directories) => StateFiles.Write(directories.LocalCommitRecord, this, CheckpointJsonContext.Default.LocalCommit);

    public static LocalCommit? Read(RunDirectories directories) => StateFiles.Read(directories.LocalCommitRecord, CheckpointJsonContext.Default.LocalCommit);

    /// <summary>
    /// Whether <paramref name="workDirectory"/> holds exactly <paramref name="manifest"/>'s files,
    /// untouched since this commit: the same files as the manifest (paths, hashes, sizes), each
    /// opened without following a symlink anywhere on its path and still the same inode, size,
    /// mtime and ctime, and nothing else in the directory.
    /// </summary>
    public bool StillHolds(CheckpointManifest manifest, string workDirectory)
    {
        if (manifest.Generation != Generation || Files.Count != manifest.Files.Count)
            return false;
        var committed = Files.ToDictionary(file => file.Path, StringComparer.Ordinal);
        foreach (var file in manifest.Files)
        {
            if (!committed.TryGetValue(file.Path, out var local) || local.Sha256 != file.Sha256 || local.Size != file.Size)
                return false;
            var opened = NoFollowFiles.OpenRegularFile(workDirectory, file.Path);
            if (opened is not { } found)
                return false;
            found.Handle.Dispose();
            if (found.Status.Inode != local.Inode || found.Status.Size != local.Size || found.Status.ModifiedNanoseconds != local.ModifiedNanoseconds || found.Status.ChangedNanoseconds != local.ChangedNanoseconds)
                return false;
        }
        // Anything else there (a symlink, a leftover temp file) was never part of the generation.
        var directories = committed.Keys
            .SelectMany(path => Enumerable.Range(0, path.Length).Where(index => path[index] == '/').Select(index => path[..index]))
            .ToHashSet(StringComparer.Ordinal);
        var everything = new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0, IgnoreInaccessible = false, ReturnSpecialDirectories = false };
        return Directory.EnumerateFileSystemEntries(workDirectory, "*", everything)
            .Select(path => System.IO.Path.GetRelativePath(workDirectory, path))
            .All(path => committed.ContainsKey(path) || directories.Contains(path));
    }
}
