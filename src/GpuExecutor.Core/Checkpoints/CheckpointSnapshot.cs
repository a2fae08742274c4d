using System.Globalization;
using GpuExecutor.HostFiles;

namespace GpuExecutor.Checkpoints;

/// <summary>One file of a snapshot: its place in the checkpoint, its private copy, and what the copy hashes to.</summary>
public sealed record SnapshotFile(string Path, string StagedPath, string Sha256, long Size, int Mode, ulong SourceInode, long SourceModifiedNanoseconds)
{
    /// <summary>The source's ctime when it was copied: unchanged later, the source still holds these bytes.</summary>
    public long SourceChangedNanoseconds { get; init; }
}

/// <summary>A frozen copy of the checkpoint directory, which the trainer can no longer change under the upload.</summary>
public sealed record CheckpointSnapshot(string Directory, IReadOnlyList<SnapshotFile> Files)
{
    public long TotalBytes => Files.Sum(file => file.Size);
}

/// <summary>Size and modification time of every committable file: equal fingerprints mean nothing changed.</summary>
public sealed record DirectoryFingerprint(IReadOnlyList<(string Path, long Size, long ModifiedNanoseconds)> Entries)
{
    public bool IsEmpty => Entries.Count == 0;

    public bool SameAs(DirectoryFingerprint? other) => other is not null && Entries.SequenceEqual(other.Entries);
}

/// <summary>
/// Freezes the job's checkpoint directory into private copies before anything is uploaded, so the
/// trainer can go on writing (or overwrite "last.pt" in place) while the commit runs, and never
/// waits for the network. A file unchanged since the previous snapshot (same inode, size and
/// modification time) is hardlinked from it, neither copied nor hashed again.
/// Symlinks, FIFOs and other non-regular files are skipped, never followed.
/// </summary>
public sealed class CheckpointSnapshotter(string checkpointDir, string snapshotsDir)
{
    private CheckpointSnapshot? _previous;
    private long _sequence;

    public DirectoryFingerprint Fingerprint()
    {
        var entries = new List<(string, long, long)>();
        foreach (var path in CommittablePaths())
        {
            if (NoFollowFiles.Lstat(Path.Combine(checkpointDir, path)) is { IsRegularFile: true } status)
                entries.Add((path, status.Size, status.ModifiedNanoseconds));
        }
        return new DirectoryFingerprint(entries);
    }

    /// <summary>When the trainer last created the completion marker, in nanoseconds since the epoch; null when there is none.</summary>
    public long? MarkerModifiedNanoseconds => NoFollowFiles.Lstat(Path.Combine(checkpointDir, CheckpointPaths.CompleteMarker))?.ModifiedNanoseconds;

    public void RemoveMarker()
    {
        try
        {
            File.Delete(Path.Combine(checkpointDir, CheckpointPaths.CompleteMarker));
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            // The next pass sees it again and commits once more: harmless.
        }
    }

    /// <summary>
    /// Copies the directory's committable files into a new snapshot. Null when a file changed
    /// while it was copied: the checkpoint is still being written, and the caller tries later.
    /// </summary>
    public CheckpointSnapshot? Take()
    {
        var directory = Path.Combine(snapshotsDir, (++_sequence).ToString("D6", CultureInfo.InvariantCulture) + "-" + Environment.ProcessId.ToString(CultureInfo.InvariantCulture));
        Directory.CreateDirectory(directory);
        var previous = _previous?.Files.ToDictionary(file => file.Path, StringComparer.Ordinal) ?? [];
        var files = new List<SnapshotFile>();
        try
        {
            foreach (var path in CommittablePaths())
            {
                var opened = NoFollowFiles.OpenRegularFile(checkpointDir, path);
                if (opened is not { } file)
                    continue;
                using var handle = file.Handle;
                var staged = Path.Combine(directory, files.Count.ToString("D7", CultureInfo.InvariantCulture));
                if (previous.TryGetValue(path, out var before) && before.SourceInode == file.Status.Inode && before.Size == file.Status.Size && before.SourceModifiedNanoseconds == file.Status.ModifiedNanoseconds && File.Exists(before.StagedPath))
                {
                    if (HardLinks.Create(before.StagedPath, staged) is not 0 and var errno)
                        throw new IOException($"could not link '{staged}' to the earlier snapshot's copy '{before.StagedPath}' (errno {errno}).");
                    files.Add(before with { StagedPath = staged, Mode = file.Status.PermissionBits, SourceChangedNanoseconds = file.Status.ChangedNanoseconds });
                    continue;
                }

                // Written back as it goes: with the file store, this copy becomes the blob and is flushed.
                var (copied, sha256) = NoFollowFiles.CopyWithSha256(handle, staged, startWriteback: true);
                // Changed while we copied: a torn copy must not be committed.
                var after = NoFollowFiles.Lstat(Path.Combine(checkpointDir, path));
                if (after is not { IsRegularFile: true } || after.Value.Size != copied || after.Value.ModifiedNanoseconds != file.Status.ModifiedNanoseconds || after.Value.Inode != file.Status.Inode)
                {
                    Directory.Delete(directory, recursive: true);
                    return null;
                }
                files.Add(new SnapshotFile(path, staged, sha256, copied, file.Status.PermissionBits, file.Status.Inode, file.Status.ModifiedNanoseconds) { SourceChangedNanoseconds = after.Value.ChangedNanoseconds });
            }
        }
        catch
        {
            Directory.Delete(directory, recursive: true);
            throw;
        }
        return new CheckpointSnapshot(directory, files);
    }

    /// <summary>The snapshot was committed: it becomes the base for reuse, and older ones go.</summary>
    public void Committed(CheckpointSnapshot snapshot)
    {
        _previous = snapshot;
        foreach (var other in Directory.EnumerateDirectories(snapshotsDir))
        {
            if (other != snapshot.Directory)
                Directory.Delete(other, recursive: true);
        }
    }

    /// <summary>
    /// Relative paths of the regular files that a commit would take, sorted. Symlinks are skipped
    /// by the enumeration itself (they carry the reparse-point attribute), so a link to /etc is
    /// never entered. Files with an in-progress name, or under a directory with one (trainers that
    /// write a checkpoint as a directory name it that way until it is done), are left out.
    /// </summary>
    private List<string> CommittablePaths()
    {
        if (!Directory.Exists(checkpointDir))
            return [];
        var options = new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = FileAttributes.ReparsePoint, IgnoreInaccessible = true, ReturnSpecialDirectories = false };
        return Directory.EnumerateFiles(checkpointDir, "*", options)
            .Select(full => Path.GetRelativePath(checkpointDir, full))
            .Where(path => !path.Split('/').Any(CheckpointPaths.LooksInProgress) && CheckpointPaths.Problem(path) is null)
            .Order(StringComparer.Ordinal)
            .ToList();
    }
}
