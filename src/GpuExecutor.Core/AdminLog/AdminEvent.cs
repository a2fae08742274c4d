using System.Text.Json.Serialization;

namespace GpuExecutor.AdminLog;

/// <summary>
/// One line of the admin log (state_dir/log/events.jsonl): one verb call, or one detached
/// process's life, with what an admin asks first: which job, what happened, how long, and why.
/// </summary>
public sealed record AdminEvent
{
    [JsonPropertyName("time")] public DateTimeOffset Time { get; init; }
    [JsonPropertyName("version")] public string Version { get; init; } = "";
    [JsonPropertyName("host")] public string Host { get; init; } = "";
    [JsonPropertyName("pid")] public int Pid { get; init; }
    /// <summary>The verb as typed: "prepare", "run", "checkpoints agent", "doctor", ...</summary>
    [JsonPropertyName("verb")] public string Verb { get; init; } = "";
    [JsonPropertyName("job")] public long? Job { get; init; }
    [JsonPropertyName("project")] public long? Project { get; init; }
    [JsonPropertyName("project_path")] public string? ProjectPath { get; init; }
    [JsonPropertyName("run_key")] public string? RunKey { get; init; }
    /// <summary>The runner's stage, for `run` (prepare_script, build_script, ...).</summary>
    [JsonPropertyName("stage")] public string? Stage { get; init; }
    [JsonPropertyName("duration_ms")] public long DurationMs { get; init; }
    /// <summary>The verb process's peak resident memory (VmHWM): a stage that streamed 50 GiB of output must show what one that streamed 5 KiB shows.</summary>
    [JsonPropertyName("peak_rss_kib")] public long? PeakRssKiB { get; init; }
    /// <summary>The verb process's CPU time, user and system, in milliseconds.</summary>
    [JsonPropertyName("cpu_ms")] public long? CpuMs { get; init; }
    /// <summary>success, build_failure, system_failure or findings (ExitCodes.OutcomeName).</summary>
    [JsonPropertyName("outcome")] public string Outcome { get; init; } = "";
    [JsonPropertyName("exit_code")] public int ExitCode { get; init; }
    /// <summary>The failure's message, secrets redacted; null on success.</summary>
    [JsonPropertyName("message")] public string? Message { get; init; }
    /// <summary>The job script's own exit code, for a build failure.</summary>
    [JsonPropertyName("script_exit_code")] public int? ScriptExitCode { get; init; }
    [JsonPropertyName("gpus")] public IReadOnlyList<string>? Gpus { get; init; }
    [JsonPropertyName("datasets")] public DatasetFigures? Datasets { get; init; }
    [JsonPropertyName("checkpoint")] public CheckpointFigures? Checkpoint { get; init; }
}

public sealed record DatasetFigures(
    [property: JsonPropertyName("objects")] int Objects,
    [property: JsonPropertyName("cache_hits")] int CacheHits,
    [property: JsonPropertyName("bytes_fetched")] long BytesFetched,
    [property: JsonPropertyName("bytes_served")] long BytesServed,
    [property: JsonPropertyName("streaming")] bool Streaming);

public sealed record CheckpointFigures(
    [property: JsonPropertyName("restored_generation")] long? RestoredGeneration,
    [property: JsonPropertyName("adopted_job")] long? AdoptedJob);

[JsonSourceGenerationOptions(DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(AdminEvent))]
public sealed partial class AdminLogJsonContext : JsonSerializerContext;
