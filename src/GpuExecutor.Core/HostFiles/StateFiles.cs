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

    /// <summary>
    /// A text file written beside its name (a name of this process's own, so two writers never
    /// share one) and renamed over it: a reader sees the old text or the new, never half. The
    /// file beside is removed when the write fails.
    /// </summary>
    public static void WriteText(string path, string text)
    {
        var temporary = $"{path}.{Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture)}.tmp";
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllText(temporary, text);
            File.Move(temporary, path, overwrite: true);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            try
            {
                File.Delete(temporary);
            }
            catch (Exception cleanup) when (cleanup is IOException or UnauthorizedAccessException)
            {
            }
            throw;
        }
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
