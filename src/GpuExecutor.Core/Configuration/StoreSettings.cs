namespace GpuExecutor.Configuration;

public enum StoreKind
{
    /// <summary>An S3-compatible object store (AWS S3, MinIO, Ceph RGW, s3rver).</summary>
    S3,

    /// <summary>A directory on the host whose subdirectories play the buckets.</summary>
    File,
}

/// <summary>A secret from the config: kept out of every ToString, so no log line can carry it.</summary>
public sealed record Secret(string Value)
{
    public override string ToString() => "***";

    /// <summary>A token pasted alone: whitespace or a control character means a line break, a comment or two values came with it.</summary>
    public static bool CanBeToken(string text) => !text.Any(character => char.IsControl(character) || char.IsWhiteSpace(character));
}

public sealed record StoreSettings
{
    public required string Name { get; init; }
    public StoreKind Kind { get; init; }

    /// <summary>S3: the endpoint URL; null means AWS's own for the region.</summary>
    public string? Endpoint { get; init; }
    public string Region { get; init; } = "us-east-1";
    public bool PathStyle { get; init; }

    /// <summary>S3: from the config; null means the SDK's environment chain (AWS_ACCESS_KEY_ID, …).</summary>
    public Secret? AccessKeyId { get; init; }
    public Secret? SecretAccessKey { get; init; }

    /// <summary>File: the directory whose subdirectories are the buckets.</summary>
    public string? Root { get; init; }

    /// <summary>"bucket" or "bucket/prefix": what jobs may read. Nothing else is readable.</summary>
    public IReadOnlyList<string> Allow { get; init; } = [];

    /// <summary>Whether the job's container gets the store's credentials (off unless the admin says so).</summary>
    public bool PassCredentialsToJob { get; init; }
}
