using System.Text.Json.Serialization.Metadata;
using System.Text.Json;

namespace GpuExecutor.HostFiles;

/// <summary>Small JSON records that verbs leave for each other under state_dir.</summary>
public static class StateFiles
{
    /// <summary>Written beside, then renamed over: a reader sees the old record or the new one, never half of one.</summary>
    public static void Write<T>(string path, T record, JsonTypeInfo<T> type)
    {
        var temporary = path + ".tmp";
        File.WriteAllBytes(temporary, JsonSerializer.SerializeToUtf8Bytes(record, type));
        File.Move(temporary, path, overwrite: true);
    }

    /// <summary>Null when there is no record, or an unreadable one (a crash mid-write leaves only the .tmp).</summary>
    public static T? Read<T>(string path, JsonTypeInfo<T> type) where T : class
    {
        try
        {
            return File.Exists(path) ? JsonSerializer.Deserialize(File.ReadAllBytes(path), type) : null;
        }
        catch (Exception error) when (error is IOException or JsonException)
        {
            return null;
        }
    }
}
